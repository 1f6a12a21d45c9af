package sshserver

import (
	"testing"

	. "github.com/onsi/gomega"
	"golang.org/x/crypto/ssh"
)

// TestCiphers: the client picks the first of its ciphers that the server offers, so the
// offered set decides what OpenSSH's client, which lists chacha20-poly1305 and AES-CTR
// first, ends up with.
func TestCiphers(t *testing.T) {
	for _, tc := range []struct {
		name         string
		offered      []string
		clientCipher string // forced with -c; "" is the client's default list
		want         string // negotiated; "" means refused
	}{
		{name: "default offer, client's default list", want: ssh.CipherAES128GCM},
		{name: "default offer, aes256-gcm forced", clientCipher: ssh.CipherAES256GCM, want: ssh.CipherAES256GCM},
		{name: "default offer, chacha20-poly1305 forced", clientCipher: ssh.CipherChaCha20Poly1305},
		{name: "default offer, aes128-ctr forced", clientCipher: ssh.CipherAES128CTR},
		{name: "chacha20-poly1305 offered, client's default list", offered: SupportedCiphers, want: ssh.CipherChaCha20Poly1305},
		{name: "aes128-ctr offered, client's default list", offered: []string{ssh.CipherAES128CTR, ssh.CipherAES128GCM}, want: ssh.CipherAES128CTR},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			e := newEnv(t, Config{Ciphers: tc.offered})
			args := []string{"-v", "-T"}
			if tc.clientCipher != "" {
				args = append(args, "-c", tc.clientCipher)
			}
			stderr, code := e.ssh("alice", append(args, "git@127.0.0.1")...)
			if tc.want == "" {
				g.Expect(code).To(Equal(255), stderr)
				g.Expect(stderr).To(ContainSubstring("no matching cipher found"))
				return
			}
			g.Expect(code).To(Equal(1), stderr) // the shell's refusal: logged in
			g.Expect(stderr).To(ContainSubstring("kex: server->client cipher: " + tc.want + " "))
		})
	}

	t.Run("Go client", func(t *testing.T) {
		g := NewWithT(t)
		c, err := newEnv(t, Config{}).client("alice")
		g.Expect(err).NotTo(HaveOccurred())
		defer c.Close()
		out, code := run(g, c, "git-upload-pack 'acme/missing.git'")
		g.Expect(code).To(Equal(exitRefused), out) // logged in, and answered
		g.Expect(out).To(ContainSubstring("not found or access denied"))
	})

	t.Run("unknown cipher", func(t *testing.T) {
		g := NewWithT(t)
		_, err := Config{Ciphers: []string{ssh.CipherAES128GCM, "aes128-cbc"}}.withDefaults()
		g.Expect(err).To(MatchError(ContainSubstring(`cipher "aes128-cbc" is not supported: use one or more of aes128-gcm@openssh.com, `)))
	})
}
