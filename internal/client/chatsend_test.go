package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"polydev/internal/worker"
)

// TestGrantJSON: the grant written by hand decodes, strictly, to the same
// worker.Grant that json.Marshal would have written — so the two cannot
// drift apart unnoticed.
func TestGrantJSON(t *testing.T) {
	t.Parallel()
	temp := 0.25
	for _, cred := range []string{"sk-plain", "with \"quotes\" and \\ and \n\t\x01 and ✓", `{"refresh_token":"x"}`} {
		key := bytes.Repeat([]byte{7}, 32)
		g := worker.Grant{Version: 1, RequestID: "r", UserID: "u", ConversationID: "c", AssistantMessageID: "a",
			Provider: "openai", Model: "m", Temperature: &temp, MaxTokens: 9, ExpiresAt: time.Unix(1800000000, 0).UTC()}
		b, err := grantJSON(g, key, []byte(cred))
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		var got worker.Grant
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		want := g
		want.Credential, want.ConversationKey = cred, "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
		if !reflect.DeepEqual(got, want) {
			t.Errorf("grant decodes to %+v; want %+v", got, want)
		}
		// Every member of the struct's own encoding appears in ours.
		full, _ := json.Marshal(want)
		var a, c map[string]any
		json.Unmarshal(full, &a)
		json.Unmarshal(b, &c)
		if !reflect.DeepEqual(a, c) {
			t.Errorf("members differ:\n got %v\nwant %v", c, a)
		}
	}
	if _, err := grantJSON(worker.Grant{}, make([]byte, 32), []byte{0xff, 0xfe}); err == nil {
		t.Error("a credential that is not UTF-8 was accepted")
	}
}

func TestEventReader(t *testing.T) {
	t.Parallel()
	const stream = ": keep-alive\r\n\r\n" +
		"data: one\n\n" +
		"event: done\ndata: {\"a\":1}\r\n\r\n" +
		"data:two\ndata: lines\n\n" +
		"event: nothing\n\n" +
		"id: 7\nretry: 1000\ndata\n\n" +
		"field-without-colon\ndata: x\n\n" +
		"data: partial at the end"
	type ev struct{ name, data string }
	want := []ev{{"", "one"}, {"done", `{"a":1}`}, {"", "two\nlines"}, {"", ""}, {"", "x"}}
	for name, r := range map[string]io.Reader{
		"whole":      strings.NewReader(stream),
		"byte":       iotest.OneByteReader(strings.NewReader(stream)),
		"half":       iotest.HalfReader(strings.NewReader(stream)),
		"data error": iotest.DataErrReader(strings.NewReader(stream)),
	} {
		er := newEventReader(r, 1<<10)
		var got []ev
		for {
			n, d, err := er.next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			got = append(got, ev{n, string(d)})
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %q; want %q", name, got, want)
		}
	}
	// Size limits: a long line, and many lines making one big event.
	for _, s := range []string{"data: " + strings.Repeat("x", 1<<11) + "\n\n", strings.Repeat("data: xxxxxxxx\n", 200) + "\n"} {
		_, _, err := newEventReader(strings.NewReader(s), 1<<10).next()
		if err == nil || errors.Is(err, io.EOF) {
			t.Errorf("an event over the limit: got %v; want an error", err)
		}
	}
}
