package session

import (
	"bytes"
	"fmt"
)

// Expand substitutes template variables in a session template, as `attestmesh apply` and
// `attestmesh session check --var` do before parsing:
//
//   - $NAME and ${NAME} (NAME matching [A-Za-z_][A-Za-z0-9_]*) become vars[NAME], verbatim;
//   - $$ stays $$, so $$SCONE::...$$ placeholders pass through untouched;
//   - a $ followed by anything else stays as it is.
//
// Values are inserted as they are, not YAML-quoted: a value holding ": " or a newline can
// change the document's structure, and newlines shift the lines that later errors name.
// Every undefined variable is an error, named with its line (an *Error); so is a "${" without
// a valid name and closing "}".
func Expand(template []byte, vars map[string]string) ([]byte, error) {
	var out bytes.Buffer
	out.Grow(len(template))
	var list []Problem
	line := 1
	for i := 0; i < len(template); i++ {
		c := template[i]
		if c == '\n' {
			line++
		}
		if c != '$' || i+1 >= len(template) {
			out.WriteByte(c)
			continue
		}
		next := template[i+1]
		switch {
		case next == '$':
			out.WriteString("$$")
			i++
		case next == '{':
			end := bytes.IndexByte(template[i+2:], '}')
			if end < 0 || !isIdentifier(string(template[i+2:i+2+end])) {
				near := string(template[i:min(len(template), i+20)])
				list = append(list, Problem{Line: line, Msg: fmt.Sprintf("malformed variable near %q: want ${NAME}", near)})
				out.WriteByte(c)
				continue
			}
			name := string(template[i+2 : i+2+end])
			i += 2 + end
			list = substitute(&out, list, vars, name, line)
		case isNameStart(next):
			j := i + 1
			for j < len(template) && (isNameStart(template[j]) || template[j] >= '0' && template[j] <= '9') {
				j++
			}
			name := string(template[i+1 : j])
			i = j - 1
			list = substitute(&out, list, vars, name, line)
		default:
			out.WriteByte(c)
		}
	}
	if len(list) > 0 {
		return nil, &Error{Problems: list}
	}
	return out.Bytes(), nil
}

func isNameStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func substitute(out *bytes.Buffer, list []Problem, vars map[string]string, name string, line int) []Problem {
	v, ok := vars[name]
	if !ok {
		return append(list, Problem{Line: line, Msg: fmt.Sprintf("undefined variable $%s", name)})
	}
	out.WriteString(v)
	return list
}
