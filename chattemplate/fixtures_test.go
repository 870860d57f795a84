package chattemplate

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// fixtures mirrors chattemplate/testdata/renders.json, written by
// tools/reference/chattemplate/render_fixtures.py with Python Jinja2.
type fixtures struct {
	Now           string `json:"now"`
	Conversations map[string]struct {
		Messages            []Message       `json:"messages"`
		AddGenerationPrompt bool            `json:"add_generation_prompt"`
		Tools               json.RawMessage `json:"tools"`
	} `json:"conversations"`
	Templates []struct {
		Names        []string `json:"names"`
		Template     string   `json:"template"`
		BOSToken     string   `json:"bos_token"`
		EOSToken     string   `json:"eos_token"`
		CompileError string   `json:"compile_error"`
		Cases        []struct {
			Conversation string  `json:"conversation"`
			Output       *string `json:"output"`
			Error        string  `json:"error"`
			ErrorType    string  `json:"error_type"`
		} `json:"cases"`
	} `json:"templates"`
}

func loadFixtures(t testing.TB) *fixtures {
	t.Helper()
	data, err := os.ReadFile("testdata/renders.json")
	if os.IsNotExist(err) {
		data, err = os.ReadFile("testdata/renders.json.gz")
		if err == nil {
			var zr *gzip.Reader
			if zr, err = gzip.NewReader(bytes.NewReader(data)); err == nil {
				data, err = io.ReadAll(zr)
			}
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	var f fixtures
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	return &f
}

// knownDifferences lists template×conversation renders ("model/conversation")
// that do not match Jinja2, with the reason. Keep it small and explained.
var knownDifferences = map[string]string{}

func TestRendersMatchJinja2(t *testing.T) {
	f := loadFixtures(t)
	now, err := time.Parse("2006-01-02T15:04:05", f.Now)
	if err != nil {
		t.Fatal(err)
	}
	var total, matched int
	for _, tf := range f.Templates {
		name := tf.Names[0]
		tmpl, err := Parse(tf.Template)
		if tf.CompileError != "" {
			if err == nil {
				t.Errorf("%s: Parse succeeded, Jinja2 failed: %s", name, tf.CompileError)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: Parse: %v", name, err)
			continue
		}
		for _, c := range tf.Cases {
			total++
			key := name + "/" + c.Conversation
			conv := f.Conversations[c.Conversation]
			opt := Options{
				AddGenerationPrompt: conv.AddGenerationPrompt,
				BOSToken:            tf.BOSToken,
				EOSToken:            tf.EOSToken,
				Now:                 func() time.Time { return now },
			}
			if string(conv.Tools) != "null" {
				opt.ToolsJSON = conv.Tools
			}
			got, err := tmpl.Render(conv.Messages, opt)
			ok := true
			switch {
			case c.Output == nil && err == nil:
				ok = false
				t.Logf("%s: rendered, Jinja2 raised %s: %s", key, c.ErrorType, c.Error)
			case c.Output == nil && c.ErrorType == "TemplateError" && !strings.Contains(err.Error(), c.Error):
				ok = false
				t.Logf("%s: error %q does not carry the template's message %q", key, err, c.Error)
			case c.Output != nil && err != nil:
				ok = false
				t.Logf("%s: Render: %v", key, err)
			case c.Output != nil && got != *c.Output:
				ok = false
				t.Logf("%s: mismatch\n%s", key, firstDiff(*c.Output, got))
			}
			if ok {
				matched++
				if reason, listed := knownDifferences[key]; listed {
					t.Errorf("%s: listed as a known difference (%s) but now matches; remove it", key, reason)
				}
			} else if _, listed := knownDifferences[key]; !listed {
				t.Errorf("%s: does not match Jinja2", key)
			}
		}
	}
	t.Logf("%d/%d template×conversation renders match Jinja2 (%d templates)", matched, total, len(f.Templates))
}

// firstDiff shows where want and got first differ.
func firstDiff(want, got string) string {
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	lo := max(i-60, 0)
	return "  at byte " + itoa(i) + "\n  want: " + quoteSpan(want, lo, i+80) + "\n  got:  " + quoteSpan(got, lo, i+80)
}

func quoteSpan(s string, lo, hi int) string {
	hi = min(hi, len(s))
	lo = min(lo, hi)
	b, _ := json.Marshal(s[lo:hi])
	return string(b)
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }
