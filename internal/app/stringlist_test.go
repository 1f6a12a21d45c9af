package app_test

import (
	"testing"

	. "github.com/onsi/gomega"

	"github.com/gitssh-dev/gitssh/internal/app"
)

func TestStringList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want app.StringList
	}{
		{"aes128-gcm@openssh.com", app.StringList{"aes128-gcm@openssh.com"}},
		{"aes128-gcm@openssh.com, aes128-ctr,", app.StringList{"aes128-gcm@openssh.com", "aes128-ctr"}},
		{"", nil},
	} {
		g := NewWithT(t)
		var l app.StringList
		g.Expect(l.UnmarshalText([]byte(tc.in))).To(Succeed())
		g.Expect(l).To(Equal(tc.want), tc.in)
	}
	g := NewWithT(t)
	text, err := app.StringList{"a", "b"}.MarshalText()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(text)).To(Equal("a,b"))
}
