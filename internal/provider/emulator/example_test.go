package emulator_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"polydev/internal/provider"
	"polydev/internal/provider/emulator"
)

// The emulator answers with the last user message's words followed by
// filler, shaped by knobs from the model name.
func Example() {
	em := emulator.New(emulator.Options{})
	defer em.Close()
	srv := httptest.NewServer(em.Handler())
	defer srv.Close()

	req, _ := http.NewRequest("POST", emulator.BaseURL(srv.URL, provider.OpenAI)+"/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini+tokens=4","stream":true,"messages":[{"role":"user","content":"hi there"}]}`))
	req.Header.Set("Authorization", "Bearer any-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Status, strings.Count(string(body), `"content":"`), "content chunks")
	fmt.Println(emulator.ReplyText("hi there", 4))
	fmt.Println(strings.HasSuffix(string(body), "data: [DONE]\n\n"))
	// Output:
	// 200 OK 5 content chunks
	// hi there lorem ipsum
	// true
}
