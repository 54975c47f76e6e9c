package session

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a session document.
type Problem struct {
	Field string // field path such as "secrets[3].issuer"; empty for the whole document
	Line  int    // 1-based line in the document; 0 when unknown
	Msg   string
}

// String formats the problem as "line 12: secrets[3].issuer: msg", leaving out what is unknown.
func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(p.Line))
		b.WriteString(": ")
	}
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error lists every problem found in a session document. Parse, Validate, CheckImports,
// CheckCreate, CheckUpdate and Expand return it; use errors.As to get the problems.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	if len(parts) == 1 {
		return "session: " + parts[0]
	}
	return fmt.Sprintf("session: %d problems: %s", len(parts), strings.Join(parts, "; "))
}

// problems collects Problems with the lines of a session.
type problems struct {
	s    *Session
	list []Problem
}

func (p *problems) add(field, format string, args ...any) {
	p.list = append(p.list, Problem{Field: field, Line: p.s.line(field), Msg: fmt.Sprintf(format, args...)})
}

// err returns nil or an *Error with the problems in line order.
func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	return &Error{Problems: sortByLine(p.list)}
}

// sortByLine sorts problems by line, keeping the order of those on the same line.
func sortByLine(list []Problem) []Problem {
	slices.SortStableFunc(list, func(a, b Problem) int { return cmp.Compare(a.Line, b.Line) })
	return list
}

// quoteList formats names for messages: "a, b, c", at most 8 of them.
func quoteList[T ~string](names []T) string {
	const most = 8
	parts := make([]string, 0, min(len(names), most)+1)
	for i, n := range names {
		if i == most {
			parts = append(parts, fmt.Sprintf("... %d more", len(names)-most))
			break
		}
		parts = append(parts, string(n))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
