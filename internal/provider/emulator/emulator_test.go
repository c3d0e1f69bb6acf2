package emulator_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"polydev/internal/provider"
	"polydev/internal/provider/emulator"
)

// serve starts the emulator on a loopback listener.
func serve(t *testing.T, opts emulator.Options) (*emulator.Emulator, string) {
	t.Helper()
	em := emulator.New(opts)
	srv := httptest.NewServer(em.Handler())
	t.Cleanup(func() {
		em.Close()
		srv.Close()
	})
	return em, srv.URL
}

// post sends a JSON body with headers and returns the response.
func post(t *testing.T, url, body string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

type sseEvent struct{ name, data string }

// readSSE reads events until the body ends; err is the read error, if any.
func readSSE(r io.Reader) (events []sseEvent, err error) {
	sc := bufio.NewScanner(r)
	var cur sseEvent
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		switch {
		case line == "":
			if cur.data != "" || cur.name != "" {
				events = append(events, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		}
	}
	return events, sc.Err()
}

var (
	oaHdr = map[string]string{"Authorization": "Bearer test-key"}
	anHdr = map[string]string{"X-Api-Key": "test-key", "Anthropic-Version": "2023-06-01"}
	gHdr  = map[string]string{"X-Goog-Api-Key": "test-key"}
)

func TestReplyRule(t *testing.T) {
	t.Parallel()
	tests := []struct {
		prompt string
		n      int
		want   string
	}{
		{"hello  world\n", -1, "hello world lorem ipsum dolor sit amet consectetur adipiscing elit"},
		{"one two three", 2, "one two"},
		{"", 3, "lorem ipsum dolor"},
		{"a", 21, "a " + strings.Join(emulator.Filler, " ") + " lorem"},
	}
	for _, tt := range tests {
		if got := emulator.ReplyText(tt.prompt, tt.n); got != tt.want {
			t.Errorf("ReplyText(%q, %d) = %q; want %q", tt.prompt, tt.n, got, tt.want)
		}
	}
}

func TestValidateKnobs(t *testing.T) {
	t.Parallel()
	good := []string{"", "ttft=50ms;tps=200;cut_after=5", "stall=1s,stall_after=3", "fail=529+fail_first=2+id=x", "retry_after=250", " tokens = 4 "}
	for _, s := range good {
		if err := emulator.ValidateKnobs(s); err != nil {
			t.Errorf("ValidateKnobs(%q) = %v; want nil", s, err)
		}
	}
	bad := []string{"ttft", "ttft=soon", "tps=-1", "fail=200", "cut_after=-2", "colour=blue", "ttft=2h"}
	for _, s := range bad {
		if err := emulator.ValidateKnobs(s); err == nil {
			t.Errorf("ValidateKnobs(%q) = nil; want an error", s)
		}
	}
}

func TestBaseURL(t *testing.T) {
	t.Parallel()
	for prov, want := range map[string]string{
		provider.OpenAI: "http://h:1/openai/v1", provider.Anthropic: "http://h:1/anthropic", provider.Google: "http://h:1/google", "x": "",
	} {
		if got := emulator.BaseURL("http://h:1/", prov); got != want {
			t.Errorf("BaseURL(%q) = %q; want %q", prov, got, want)
		}
	}
}

// TestWireStreams checks the framing of each provider's stream byte by
// byte where it matters: event names, the terminator, and the text.
func TestWireStreams(t *testing.T) {
	t.Parallel()
	_, root := serve(t, emulator.Options{})
	want := "hi there lorem ipsum dolor sit amet consectetur adipiscing elit"

	t.Run("openai", func(t *testing.T) {
		resp := post(t, root+"/openai/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi there"}]}`, oaHdr)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") || resp.Header.Get("X-Request-Id") == "" {
			t.Fatalf("status %d, content-type %q, x-request-id %q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("X-Request-Id"))
		}
		events, err := readSSE(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if last := events[len(events)-1].data; last != "[DONE]" {
			t.Fatalf("last event %q; want [DONE]", last)
		}
		var text strings.Builder
		var finish string
		var usage map[string]any
		for _, ev := range events[:len(events)-1] {
			var c struct {
				Object  string `json:"object"`
				Choices []struct {
					Delta        struct{ Content string } `json:"delta"`
					FinishReason *string                  `json:"finish_reason"`
				} `json:"choices"`
				Usage map[string]any `json:"usage"`
			}
			if err := json.Unmarshal([]byte(ev.data), &c); err != nil {
				t.Fatal(err)
			}
			if c.Object != "chat.completion.chunk" {
				t.Errorf("object %q", c.Object)
			}
			for _, ch := range c.Choices {
				text.WriteString(ch.Delta.Content)
				if ch.FinishReason != nil {
					finish = *ch.FinishReason
				}
			}
			if c.Usage != nil {
				usage = c.Usage
			}
		}
		if text.String() != want || finish != "stop" {
			t.Errorf("text %q finish %q; want %q stop", text.String(), finish, want)
		}
		if usage["prompt_tokens"] != 4.0 || usage["completion_tokens"] != 10.0 || usage["total_tokens"] != 14.0 {
			t.Errorf("usage %v; want 4 + 10", usage)
		}
	})

	t.Run("anthropic", func(t *testing.T) {
		resp := post(t, root+"/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"stream":true,"system":"be brief","messages":[{"role":"user","content":[{"type":"text","text":"hi there"}]}]}`, anHdr)
		if resp.StatusCode != 200 || resp.Header.Get("Request-Id") == "" {
			t.Fatalf("status %d, request-id %q", resp.StatusCode, resp.Header.Get("Request-Id"))
		}
		events, err := readSSE(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		var text strings.Builder
		for _, ev := range events {
			names = append(names, ev.name)
			var d struct {
				Type  string `json:"type"`
				Delta struct {
					Text       string `json:"text"`
					StopReason string `json:"stop_reason"`
				} `json:"delta"`
			}
			if err := json.Unmarshal([]byte(ev.data), &d); err != nil {
				t.Fatal(err)
			}
			if d.Type != ev.name {
				t.Errorf("event %q carries type %q", ev.name, d.Type)
			}
			text.WriteString(d.Delta.Text)
			if ev.name == "message_delta" && d.Delta.StopReason != "max_tokens" {
				t.Errorf("stop_reason %q; want max_tokens", d.Delta.StopReason)
			}
		}
		wantNames := "message_start content_block_start ping content_block_delta content_block_delta content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop"
		if got := strings.Join(names, " "); got != wantNames {
			t.Errorf("events\n%s\nwant\n%s", got, wantNames)
		}
		if text.String() != "hi there lorem ipsum dolor" {
			t.Errorf("text %q", text.String())
		}
	})

	t.Run("google sse", func(t *testing.T) {
		resp := post(t, root+"/google/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", `{"contents":[{"role":"user","parts":[{"text":"hi there"}]}]}`, gHdr)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("status %d, content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		body, _ := io.ReadAll(resp.Body)
		if !strings.HasSuffix(string(body), "\r\n\r\n") {
			t.Errorf("events do not end with CRLF CRLF: %q", body[len(body)-10:])
		}
		events, err := readSSE(strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		var text strings.Builder
		var last map[string]any
		for _, ev := range events {
			var c struct {
				Candidates []struct {
					Content struct{ Parts []struct{ Text string } }
				}
			}
			if err := json.Unmarshal([]byte(ev.data), &c); err != nil {
				t.Fatal(err)
			}
			text.WriteString(c.Candidates[0].Content.Parts[0].Text)
			json.Unmarshal([]byte(ev.data), &last)
		}
		if text.String() != want {
			t.Errorf("text %q; want %q", text.String(), want)
		}
		cand := last["candidates"].([]any)[0].(map[string]any)
		um := last["usageMetadata"].(map[string]any)
		if cand["finishReason"] != "STOP" || um["promptTokenCount"] != 2.0 || um["candidatesTokenCount"] != 10.0 || um["totalTokenCount"] != 12.0 {
			t.Errorf("final chunk %v", last)
		}
	})

	t.Run("google json array", func(t *testing.T) {
		resp := post(t, root+"/google/v1beta/models/gemini-2.5-flash:streamGenerateContent?key=test-key", `{"contents":[{"parts":[{"text":"hi there"}]}],"generationConfig":{"maxOutputTokens":3}}`, nil)
		var chunks []struct {
			Candidates []struct {
				Content      struct{ Parts []struct{ Text string } }
				FinishReason string
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&chunks); err != nil {
			t.Fatalf("status %d: %v", resp.StatusCode, err)
		}
		var text strings.Builder
		for _, c := range chunks {
			text.WriteString(c.Candidates[0].Content.Parts[0].Text)
		}
		if text.String() != "hi there lorem" || chunks[len(chunks)-1].Candidates[0].FinishReason != "MAX_TOKENS" {
			t.Errorf("text %q, last chunk %+v", text.String(), chunks[len(chunks)-1])
		}
	})
}

// TestErrors checks status codes and error bodies of each provider.
func TestErrors(t *testing.T) {
	t.Parallel()
	_, root := serve(t, emulator.Options{})
	oa, an := root+"/openai/v1/chat/completions", root+"/anthropic/v1/messages"
	g := root + "/google/v1beta/models/gemini-2.5-flash:generateContent"
	oaBody := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	anBody := `{"model":"claude","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`
	gBody := `{"contents":[{"parts":[{"text":"hi"}]}]}`
	with := func(h map[string]string, k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range h {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name, url, body string
		hdr             map[string]string
		status          int
		want            string // a JSON path=value that must hold, e.g. "error.type=authentication_error"
		retryAfter      string
	}{
		{"openai no key", oa, oaBody, nil, 401, "error.type=invalid_request_error", ""},
		{"openai bad key", oa, oaBody, with(oaHdr, "Authorization", "Bearer invalid-1"), 401, "error.code=invalid_api_key", ""},
		{"openai no messages", oa, `{"model":"m"}`, oaHdr, 400, "error.param=messages", ""},
		{"openai 429", oa, oaBody, with(oaHdr, "X-Polydev-Emulator", "fail=429;retry_after=3s"), 429, "error.code=rate_limit_exceeded", "3"},
		{"openai 500 by model suffix", oa, `{"model":"gpt-4o-mini+fail=500","messages":[{"role":"user","content":"hi"}]}`, oaHdr, 500, "error.type=server_error", ""},
		{"openai 529 is 503", oa, oaBody, with(oaHdr, "X-Polydev-Emulator", "fail=529"), 503, "error.type=server_error", ""},
		{"openai bad knob", oa, oaBody, with(oaHdr, "X-Polydev-Emulator", "warp=9"), 400, "error.type=invalid_request_error", ""},
		{"anthropic no key", an, anBody, with(anHdr, "X-Api-Key", ""), 401, "error.type=authentication_error", ""},
		{"anthropic bad key", an, anBody, with(anHdr, "X-Api-Key", "invalid"), 401, "error.message=invalid x-api-key", ""},
		{"anthropic no version", an, anBody, with(anHdr, "Anthropic-Version", ""), 400, "error.message=anthropic-version: header is required", ""},
		{"anthropic no max_tokens", an, `{"model":"c","messages":[{"role":"user","content":"hi"}]}`, anHdr, 400, "error.message=max_tokens: Field required", ""},
		{"anthropic 529", an, anBody, with(anHdr, "X-Polydev-Emulator", "fail=529"), 529, "error.type=overloaded_error", ""},
		{"anthropic 429", an, anBody, with(anHdr, "X-Polydev-Emulator", "fail=429"), 429, "error.type=rate_limit_error", "1"},
		{"anthropic 500", an, anBody, with(anHdr, "X-Polydev-Emulator", "fail=500"), 500, "type=error", ""},
		{"google no key", g, gBody, nil, 403, "error.status=PERMISSION_DENIED", ""},
		{"google bad key", g, gBody, map[string]string{"X-Goog-Api-Key": "invalid"}, 400, "error.status=INVALID_ARGUMENT", ""},
		{"google 429", g, gBody, with(gHdr, "X-Polydev-Emulator", "fail=429;retry_after=2s"), 429, "error.status=RESOURCE_EXHAUSTED", ""},
		{"google 503", g, gBody, with(gHdr, "X-Polydev-Emulator", "fail=503"), 503, "error.status=UNAVAILABLE", ""},
		{"google no contents", g, `{}`, gHdr, 400, "error.code=400", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(t, tt.url, tt.body, tt.hdr)
			var body map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Errorf("status %d; want %d (%v)", resp.StatusCode, tt.status, body)
			}
			path, want, _ := strings.Cut(tt.want, "=")
			var v any = body
			for _, p := range strings.Split(path, ".") {
				m, _ := v.(map[string]any)
				v = m[p]
			}
			if got := strings.TrimSuffix(strings.TrimSuffix(jsonString(v), ".0"), "\n"); got != want {
				t.Errorf("%s = %q; want %q (%v)", path, got, want, body)
			}
			if got := resp.Header.Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("retry-after %q; want %q", got, tt.retryAfter)
			}
		})
	}
}

func jsonString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// TestGoogleArrayErrors checks that the JSON-array stream form wraps its
// error body in an array, as Gemini does, and the SSE form does not.
func TestGoogleArrayErrors(t *testing.T) {
	t.Parallel()
	_, root := serve(t, emulator.Options{})
	hdr := map[string]string{"X-Goog-Api-Key": "k", "X-Polydev-Emulator": "fail=429"}
	base := root + "/google/v1beta/models/g:streamGenerateContent"
	body := `{"contents":[{"parts":[{"text":"hi"}]}]}`
	var arr []struct{ Error struct{ Code int } }
	if err := json.NewDecoder(post(t, base, body, hdr).Body).Decode(&arr); err != nil || len(arr) != 1 || arr[0].Error.Code != 429 {
		t.Errorf("array form: %v %+v; want [{error: {code: 429}}]", err, arr)
	}
	var obj struct{ Error struct{ Code int } }
	if err := json.NewDecoder(post(t, base+"?alt=sse", body, hdr).Body).Decode(&obj); err != nil || obj.Error.Code != 429 {
		t.Errorf("sse form: %v %+v; want {error: {code: 429}}", err, obj)
	}
}

// TestCutAndAbort checks that cut_after drops the connection without a
// terminator and that a client going away is noticed.
func TestCutAndAbort(t *testing.T) {
	t.Parallel()
	em, root := serve(t, emulator.Options{})
	resp := post(t, root+"/anthropic/v1/messages", `{"model":"claude+cut_after=3","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"one two three four"}]}`, anHdr)
	events, err := readSSE(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("read error %v; want unexpected EOF", err)
	}
	deltas := 0
	for _, ev := range events {
		if ev.name == "content_block_delta" {
			deltas++
		}
		if ev.name == "message_stop" {
			t.Error("a cut stream carried message_stop")
		}
	}
	if deltas != 3 {
		t.Errorf("%d deltas before the cut; want 3", deltas)
	}

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", root+"/openai/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini+tps=20;tokens=1000","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer k")
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp2.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp2.Body.Close()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := em.Wait(wctx, func(s emulator.Stats) bool { return s.Aborted == 1 }); err != nil {
		t.Fatalf("%v; stats %+v", err, em.Stats())
	}
	recs := em.Records()
	last := recs[len(recs)-1]
	if last.Outcome != emulator.OutcomeAborted || last.TokensSent >= 1000 {
		t.Errorf("last record %+v", last)
	}
	if s := em.Stats(); s.Cut != 1 || s.InFlight != 0 {
		t.Errorf("stats %+v; want 1 cut, none in flight", s)
	}
}

// TestFailFirst checks that fail_first counts per provider and id, and that
// runtime knobs set over HTTP apply and reset the counters.
func TestFailFirst(t *testing.T) {
	t.Parallel()
	em, root := serve(t, emulator.Options{Knobs: "tokens=2"})
	url := root + "/openai/v1/chat/completions"
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	hdr := map[string]string{"Authorization": "Bearer k", "X-Polydev-Emulator": "fail=500;fail_first=2;id=a"}
	var got []int
	for range 4 {
		got = append(got, post(t, url, body, hdr).StatusCode)
	}
	if want := []int{500, 500, 200, 200}; !equal(got, want) {
		t.Errorf("statuses %v; want %v", got, want)
	}

	resp := post(t, root+"/emulator/knobs", `{"fail":429,"fail_first":1,"retry_after":"0"}`, nil)
	if resp.StatusCode != 200 || em.Knobs() != "fail=429;fail_first=1;retry_after=0" {
		t.Fatalf("POST /emulator/knobs: status %d, knobs %q", resp.StatusCode, em.Knobs())
	}
	r1 := post(t, url, body, oaHdr)
	r2 := post(t, url, body, oaHdr)
	if r1.StatusCode != 429 || r1.Header.Get("Retry-After") != "0" || r2.StatusCode != 200 {
		t.Errorf("after runtime knobs: %d (retry-after %q) then %d; want 429 (0) then 200", r1.StatusCode, r1.Header.Get("Retry-After"), r2.StatusCode)
	}
	var out struct {
		Choices []struct{ Message struct{ Content string } }
	}
	json.NewDecoder(r2.Body).Decode(&out)
	if out.Choices[0].Message.Content != "hi lorem" {
		t.Errorf("reply %q; want the Options default tokens=2", out.Choices[0].Message.Content)
	}
	if resp := post(t, root+"/emulator/knobs", `{"fail":"soon"}`, nil); resp.StatusCode != 400 {
		t.Errorf("bad knobs: status %d; want 400", resp.StatusCode)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestKeys checks that a configured key list is the only one accepted.
func TestKeys(t *testing.T) {
	t.Parallel()
	_, root := serve(t, emulator.Options{Keys: []string{"only-this"}})
	body := `{"contents":[{"parts":[{"text":"hi"}]}]}`
	url := root + "/google/v1beta/models/g:generateContent"
	if s := post(t, url, body, map[string]string{"X-Goog-Api-Key": "only-this"}).StatusCode; s != 200 {
		t.Errorf("listed key: status %d; want 200", s)
	}
	if s := post(t, url, body, map[string]string{"X-Goog-Api-Key": "other"}).StatusCode; s != 400 {
		t.Errorf("unlisted key: status %d; want 400", s)
	}
}

// TestCloseEndsStalls checks that Close ends a stalled answer at once.
func TestCloseEndsStalls(t *testing.T) {
	t.Parallel()
	em, root := serve(t, emulator.Options{})
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("POST", root+"/openai/v1/chat/completions", strings.NewReader(`{"model":"m+stall=1h;stall_after=1","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer k")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := em.Wait(ctx, func(s emulator.Stats) bool { return s.InFlight == 1 }); err != nil {
		t.Fatal(err)
	}
	em.Close()
	if err := em.Wait(ctx, func(s emulator.Stats) bool { return s.Shutdown == 1 }); err != nil {
		t.Fatalf("%v; stats %+v", err, em.Stats())
	}
	<-done
}

// TestPacing checks that ttft, tps and stall hold tokens back at least as
// long as asked (lower bounds only: a slow machine may take longer).
func TestPacing(t *testing.T) {
	t.Parallel()
	_, root := serve(t, emulator.Options{})
	start := time.Now()
	resp := post(t, root+"/anthropic/v1/messages", `{"model":"c","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		map[string]string{"X-Api-Key": "k", "Anthropic-Version": "2023-06-01", "X-Polydev-Emulator": "ttft=100ms;tps=50;tokens=5;stall=150ms;stall_after=3"})
	sc := bufio.NewScanner(resp.Body)
	var at []time.Duration // when each delta arrived
	for sc.Scan() {
		if sc.Text() == "event: content_block_delta" {
			at = append(at, time.Since(start))
		}
	}
	if len(at) != 5 {
		t.Fatalf("%d deltas; want 5", len(at))
	}
	// Cumulative bounds from the request's start: the emulator cannot send
	// token i before ttft + i/tps (+ the stall once 3 tokens are out), however
	// late the client reads.
	for i, got := range at {
		min := 100*time.Millisecond + time.Duration(i)*20*time.Millisecond
		if i >= 3 {
			min += 150 * time.Millisecond
		}
		if got < min {
			t.Errorf("token %d arrived after %v; want ≥ %v", i, got, min)
		}
	}
}
