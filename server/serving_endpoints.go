package server

import (
	"fmt"
	"net/http"
	"strings"

	"hone/catalog"
	"hone/store"
)

// servingEndpointsPrefix is the hosted product's path for its serving
// endpoints; an app that called them changes only its host and token.
const servingEndpointsPrefix = "/serving-endpoints/"

// servingEndpointRoutes answer the hosted product's serving-endpoint
// routes with hone's endpoints of the same name:
// POST /serving-endpoints/{name}/invocations with the chat body its apps
// send (messages, max_tokens, temperature, stream, ...), and
// POST /serving-endpoints/chat/completions, where its apps point the
// OpenAI client (base URL <host>/serving-endpoints, model the endpoint's
// name). Both answer in OpenAI's chat completion format, streamed as
// server-sent events when asked, like the product.
func (s *Server) servingEndpointRoutes() {
	s.mux.HandleFunc("POST "+servingEndpointsPrefix+"{name}/invocations", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if !catalog.ValidEndpointName(name) {
			s.openAIFail(w, r, fmt.Errorf("serving endpoint %q: %w (hone endpoints are named with letters, digits, _ or -)", name, store.ErrNotFound))
			return
		}
		var body oaiChatRequest
		if err := s.decodeLoose(r, &body); err != nil {
			s.openAIFail(w, r, err)
			return
		}
		if body.Model != "" && body.Model != name {
			s.openAIFail(w, r, badParam("model", fmt.Sprintf("model %q: this route answers with endpoint %s; leave model out", body.Model, name)))
			return
		}
		if len(body.Messages) == 0 {
			s.openAIFail(w, r, badParam("messages", "messages is required: hone endpoints answer chat requests "+
				"({\"messages\": [{\"role\": \"user\", \"content\": \"...\"}]}); dataframe and inputs bodies are not supported"))
			return
		}
		body.Model = name
		req, err := body.native()
		if err != nil {
			s.openAIFail(w, r, err)
			return
		}
		s.complete(w, r, req, &body.oaiCommon, true)
	})
	s.mux.HandleFunc("POST "+servingEndpointsPrefix+"chat/completions", func(w http.ResponseWriter, r *http.Request) {
		var body oaiChatRequest
		if err := s.decodeLoose(r, &body); err != nil {
			s.openAIFail(w, r, err)
			return
		}
		req, err := body.native()
		if err != nil {
			s.openAIFail(w, r, err)
			return
		}
		s.complete(w, r, req, &body.oaiCommon, true)
	})
}

// servingEndpointPath reports whether p is under the product's
// serving-endpoint routes, which are guarded like /api and /v1 and answer
// errors as /v1 does.
func servingEndpointPath(p string) bool { return strings.HasPrefix(p, servingEndpointsPrefix) }
