package session

import (
	"errors"
	"fmt"
	"strings"
)

// SplitCommand splits a service command into words, the way a POSIX shell splits a simple
// command, without any expansion, globbing or operators:
//
//   - blanks (space, tab, newline) separate words;
//   - '...' keeps everything between the quotes literally;
//   - "..." keeps everything literally except that \" and \\ stand for " and \;
//   - outside quotes, \ keeps the next character literally;
//   - adjacent quoted and unquoted parts form one word: a'b c'"d" is the word "ab cd";
//   - a pair of empty quotes gives an empty word.
//
// An unterminated quote or a trailing backslash is an error.
func SplitCommand(cmd string) ([]string, error) {
	words, err := splitCommand(cmd)
	if err != nil {
		return nil, fmt.Errorf("session: command: %w", err)
	}
	return words, nil
}

// splitCommand is SplitCommand with errors that name neither the package nor the field, for
// the problem list, which names the field.
func splitCommand(cmd string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(cmd); i++ {
		c := cmd[i]
		switch c {
		case ' ', '\t', '\n', '\r':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case '\'':
			j := strings.IndexByte(cmd[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated single quote")
			}
			w.WriteString(cmd[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case '"':
			i++
			for ; i < len(cmd) && cmd[i] != '"'; i++ {
				if cmd[i] == '\\' && i+1 < len(cmd) && (cmd[i+1] == '"' || cmd[i+1] == '\\') {
					i++
				}
				w.WriteByte(cmd[i])
			}
			if i >= len(cmd) {
				return nil, errors.New("unterminated double quote")
			}
			inWord = true
		case '\\':
			if i+1 >= len(cmd) {
				return nil, errors.New("trailing backslash")
			}
			i++
			w.WriteByte(cmd[i])
			inWord = true
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}
