package hostkeys

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"golang.org/x/crypto/ssh"
)

func TestGenerateAndLoad(t *testing.T) {
	g := NewWithT(t)
	pems, err := Generate()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(pems).To(HaveLen(3))
	for name, p := range pems {
		g.Expect(string(p)).To(HavePrefix("-----BEGIN OPENSSH PRIVATE KEY-----"), name)
	}
	signers, err := Load(pems)
	g.Expect(err).NotTo(HaveOccurred())
	var types []string
	for _, s := range signers {
		types = append(types, s.PublicKey().Type())
	}
	// Sorted by file name: ecdsa, ed25519, rsa.
	g.Expect(types).To(Equal([]string{ssh.KeyAlgoECDSA256, ssh.KeyAlgoED25519, ssh.KeyAlgoRSA}))

	rsaSigner := signers[2].(ssh.MultiAlgorithmSigner)
	g.Expect(rsaSigner.Algorithms()).To(ConsistOf(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256))
	_, err = rsaSigner.SignWithAlgorithm(rand.Reader, []byte("x"), ssh.KeyAlgoRSA)
	g.Expect(err).To(HaveOccurred(), "SHA-1 signatures must not be offered")

	kh := string(KnownHosts("[h]:22", signers))
	g.Expect(strings.Count(kh, "\n")).To(Equal(3))
	g.Expect(kh).To(ContainSubstring("[h]:22 ssh-ed25519 AAAA"))
}

func TestLoadRefuses(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(small, "")
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]map[string][]byte{
		"nothing":   {},
		"garbage":   {RSA: []byte("not a key")},
		"small rsa": {RSA: pem.EncodeToMemory(block)},
	}
	for name, pems := range tests {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			_, err := Load(pems)
			g.Expect(err).To(HaveOccurred())
		})
	}
}
