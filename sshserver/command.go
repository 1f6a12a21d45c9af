package sshserver

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Git services a client may run.
const (
	UploadPack    = "git-upload-pack"
	ReceivePack   = "git-receive-pack"
	UploadArchive = "git-upload-archive"
)

// maxSegment is the longest OWNER or PROJECT name accepted.
const maxSegment = 100

// Command is a parsed exec request.
type Command struct {
	// Service is UploadPack, ReceivePack or UploadArchive.
	Service string
	// Owner and Project name the repository OWNER/PROJECT (".git" removed).
	Owner   string
	Project string
}

// ErrUnknownCommand means the exec request is not one of the git services.
var ErrUnknownCommand = errors.New("unknown command")

// PathError means a git service was asked for with a malformed repository path.
type PathError struct {
	Service string
	Arg     string
	Reason  string
}

func (e *PathError) Error() string {
	return fmt.Sprintf("%s: invalid repository path %s: %s (expected OWNER/PROJECT.git, names made of letters, digits, '.', '_' and '-')",
		e.Service, quoteForMessage(e.Arg), e.Reason)
}

// ParseCommand parses an SSH exec request such as
// "git-upload-pack '/owner/project.git'". It accepts the three git services,
// spelled "git-upload-pack" or "git upload-pack", followed by one space and
// exactly one path, unquoted, single-quoted (as git sends it) or double-quoted.
// It returns ErrUnknownCommand for anything that is not a git service and a
// *PathError for a git service with a missing or malformed path. Nothing is
// ever handed to a shell.
func ParseCommand(s string) (Command, error) {
	service, arg, ok := splitService(s)
	if !ok {
		return Command{}, ErrUnknownCommand
	}
	pathErr := func(reason string) error { return &PathError{Service: service, Arg: arg, Reason: reason} }
	if arg == "" {
		return Command{}, pathErr("missing")
	}
	path, err := unquote(arg)
	if err != nil {
		return Command{}, pathErr(err.Error())
	}
	path = strings.TrimPrefix(path, "/")
	owner, project, ok := strings.Cut(path, "/")
	if !ok || strings.Contains(project, "/") {
		return Command{}, pathErr("must have exactly two parts")
	}
	project = strings.TrimSuffix(project, ".git")
	for _, seg := range []string{owner, project} {
		if err := checkSegment(seg); err != nil {
			return Command{}, pathErr(err.Error())
		}
	}
	return Command{Service: service, Owner: owner, Project: project}, nil
}

// splitService splits "git-SERVICE ARG" or "git SERVICE ARG"; arg is "" when
// absent. It reports false when the verb is not a git service.
func splitService(s string) (service, arg string, ok bool) {
	var verb string
	if rest, found := strings.CutPrefix(s, "git "); found {
		sub, a, _ := strings.Cut(rest, " ")
		verb, arg = "git-"+sub, a
	} else {
		verb, arg, _ = strings.Cut(s, " ")
	}
	switch verb {
	case UploadPack, ReceivePack, UploadArchive:
		return verb, arg, true
	}
	return "", "", false
}

func unquote(arg string) (string, error) {
	for _, q := range []byte{'\'', '"'} {
		if arg[0] != q {
			continue
		}
		if len(arg) < 2 || arg[len(arg)-1] != q {
			return "", errors.New("unbalanced quotes")
		}
		inner := arg[1 : len(arg)-1]
		if strings.ContainsAny(inner, "'\"\\") {
			return "", errors.New("quotes or backslashes inside the path")
		}
		return inner, nil
	}
	if strings.ContainsAny(arg, "'\"\\ ") {
		return "", errors.New("more than one argument, quotes or backslashes")
	}
	return arg, nil
}

func checkSegment(seg string) error {
	if seg == "" {
		return errors.New("empty name")
	}
	if len(seg) > maxSegment {
		return fmt.Errorf("name longer than %d characters", maxSegment)
	}
	if !isAlnum(seg[0]) {
		return errors.New("names must start with a letter or digit")
	}
	for i := 1; i < len(seg); i++ {
		if c := seg[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("character %s not allowed", strconv.QuoteRune(rune(c)))
		}
	}
	if strings.Contains(seg, "..") {
		return errors.New(`".." not allowed`)
	}
	return nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// maxQuoted is how many bytes of client input go into a message or log line.
const maxQuoted = 80

// quoteForMessage quotes client input for a message or log: Go-quoted so
// control characters and invalid UTF-8 are escaped, truncated when long.
func quoteForMessage(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + fmt.Sprintf("… (%d bytes)", len(s))
}
