package emulator

import (
	"strings"

	"polydev/internal/provider"
)

// The reply rule. An answer is a function of the request only:
//
//   - A token is a run of non-space characters (strings.Fields). Streamed
//     deltas are the tokens in order, each but the first preceded by one
//     space, so the concatenated deltas equal the tokens joined by single
//     spaces.
//   - The reply's tokens are the tokens of the last user message, followed by
//     the filler words below, repeated as needed.
//   - Its length is the tokens knob when set, else every token of the last
//     user message plus DefaultFiller filler words.
//   - The request's output cap (max_tokens, max_completion_tokens,
//     max_output_tokens, maxOutputTokens) cuts the reply to that many tokens
//     and the finish reason becomes the provider's "length".
//   - Input tokens are the tokens of every message the request carries,
//     system text included.

// Filler is the word list the reply continues with after the echo.
var Filler = strings.Fields("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua")

// DefaultFiller is how many filler words follow the echo when the tokens
// knob is not set.
const DefaultFiller = 8

// Reply returns the tokens of the answer to a request whose last user
// message is prompt, when the tokens knob is n (n < 0: not set). It ignores
// the output cap; see the package documentation.
func Reply(prompt string, n int) []string {
	echo := strings.Fields(prompt)
	if n < 0 {
		n = len(echo) + DefaultFiller
	}
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		if i < len(echo) {
			out = append(out, echo[i])
		} else {
			out = append(out, Filler[(i-len(echo))%len(Filler)])
		}
	}
	return out
}

// ReplyText is Reply joined as the client sees it: tokens separated by
// single spaces.
func ReplyText(prompt string, n int) string {
	return strings.Join(Reply(prompt, n), " ")
}

// CountTokens counts the tokens of s by the emulator's rule.
func CountTokens(s string) int { return len(strings.Fields(s)) }

// delta is how token i travels in a stream.
func delta(tokens []string, i int) string {
	if i == 0 {
		return tokens[0]
	}
	return " " + tokens[i]
}

// lastUser returns the text of the last user message.
func lastUser(msgs []provider.Message) string {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == provider.RoleUser {
			return msgs[i].Content
		}
	}
	return ""
}

// inputTokens counts every message's tokens.
func inputTokens(msgs []provider.Message) int {
	n := 0
	for _, m := range msgs {
		n += CountTokens(m.Content)
	}
	return n
}

// answer is the planned reply to one request.
type answer struct {
	tokens    []string
	truncated bool // the request's output cap cut it
	input     int
}

func plan(msgs []provider.Message, k knobs, maxTokens int) answer {
	a := answer{tokens: Reply(lastUser(msgs), k.tokens), input: inputTokens(msgs)}
	if maxTokens > 0 && len(a.tokens) > maxTokens {
		a.tokens, a.truncated = a.tokens[:maxTokens], true
	}
	return a
}

func (a answer) text() string { return strings.Join(a.tokens, " ") }
