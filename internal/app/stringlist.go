package app

import "strings"

// StringList is a comma-separated flag value, such as --ssh-ciphers=a,b.
type StringList []string

// MarshalText writes the list comma-separated, as flag's usage shows defaults.
func (l StringList) MarshalText() ([]byte, error) { return []byte(strings.Join(l, ",")), nil }

// UnmarshalText reads a comma-separated list; spaces around items are dropped.
func (l *StringList) UnmarshalText(text []byte) error {
	*l = nil
	for item := range strings.SplitSeq(string(text), ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	return nil
}
