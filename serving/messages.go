package serving

import (
	"fmt"

	"hone/chattemplate"
)

// chatRoles are the roles the models' chat templates render, as chat
// training data has them.
var chatRoles = map[string]bool{"system": true, "user": true, "assistant": true}

// checkMessages refuses a message whose role the chat template would not
// know (a template may silently skip it, or render it as some other role),
// naming the field, e.g. messages[0].role.
func checkMessages(msgs []chattemplate.Message) error {
	for i, m := range msgs {
		switch {
		case m.Role == "":
			return invalidf(fmt.Sprintf("messages[%d].role", i), "messages[%d].role is missing: want system, user or assistant", i)
		case !chatRoles[m.Role]:
			return invalidf(fmt.Sprintf("messages[%d].role", i), "messages[%d].role %q is not a chat role: want system, user or assistant", i, m.Role)
		}
	}
	return nil
}
