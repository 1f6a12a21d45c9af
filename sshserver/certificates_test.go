package sshserver

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"golang.org/x/crypto/ssh"
)

func newSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func authorizedKey(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func TestParseUserCAs(t *testing.T) {
	ca, user := newSigner(t), newSigner(t)
	cert := &ssh.Certificate{Key: user.PublicKey(), CertType: ssh.UserCert, ValidPrincipals: []string{"alice"},
		ValidBefore: ssh.CertTimeInfinity, KeyId: "alice@laptop", Serial: 7}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, caKeys, revoked string
		err                   string // empty: parses
		revokedWhy            string // why cert is revoked; empty: it is not
	}{
		{name: "CA with comments", caKeys: "# the CA\n\n" + authorizedKey(ca.PublicKey()) + " ca@example.com\n"},
		{name: "no CA", caKeys: "", revoked: ""},
		{name: "not a key", caKeys: "ssh-ed25519 AAAA", err: "trusted user CA keys: line 1 is not an OpenSSH public key"},
		{name: "options", caKeys: "cert-authority " + authorizedKey(ca.PublicKey()), err: "line 1 has authorized_keys options"},
		{name: "a certificate as CA", caKeys: authorizedKey(cert), err: "line 1 is a certificate"},
		{name: "serial", caKeys: authorizedKey(ca.PublicKey()), revoked: "serial: 7", revokedWhy: "its serial 7 is revoked"},
		{name: "serial range", caKeys: authorizedKey(ca.PublicKey()), revoked: "serial: 5-9\n", revokedWhy: "its serial 7 is revoked"},
		{name: "other serials", caKeys: authorizedKey(ca.PublicKey()), revoked: "serial: 8-9\nserial: 1\n"},
		{name: "serial 0", revoked: "serial: 0", err: "revoked certificates: line 1: serial: 0 is every certificate signed without ssh-keygen -z"},
		{name: "reversed range", revoked: "serial: 9-5", err: `serial: "9-5" is not a serial number or range`},
		{name: "key ID", revoked: "id: alice@laptop", revokedWhy: `its key ID "alice@laptop" is revoked`},
		{name: "key", revoked: "key: " + authorizedKey(user.PublicKey()), revokedWhy: "its key is revoked"},
		{name: "certificate as key", revoked: "key: " + authorizedKey(cert), revokedWhy: "its key is revoked"},
		{name: "hash", revoked: "hash: " + ssh.FingerprintSHA256(user.PublicKey()), revokedWhy: "its key is revoked"},
		{name: "CA key", revoked: "key: " + authorizedKey(ca.PublicKey()), revokedWhy: "its CA's key is revoked"},
		{name: "hash that is not SHA256", revoked: "hash: MD5:aa:bb", err: "line 1: hash: must be a SHA256 fingerprint"},
		{name: "unknown kind", revoked: "# ok\nsha1: x", err: `line 2: unknown revocation "sha1"`},
		{name: "no colon", revoked: "serial 7", err: `line 1: expected "serial: N"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			cas, err := ParseUserCAs(tt.caKeys, tt.revoked)
			if tt.err != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tt.err)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(cas.revoked(cert)).To(Equal(tt.revokedWhy))
		})
	}
}

func TestCheckSourceAddress(t *testing.T) {
	for _, tt := range []struct {
		sources, remote string
		err             string // empty: allowed
	}{
		{"127.0.0.1/32", "127.0.0.1:2222", ""},
		{"10.0.0.0/8, 127.0.0.1", "127.0.0.1:2222", ""},
		{"192.0.2.0/24", "127.0.0.1:2222", `the client address 127.0.0.1 is not in its source-address "192.0.2.0/24"`},
		{"2001:db8::/64", "[2001:db8::1]:2222", ""},
		{"127.0.0.0/8", "[::ffff:127.0.0.1]:2222", ""},
		{"2001:db8::/64", "127.0.0.1:2222", "is not in its source-address"},
		{"localhost", "127.0.0.1:2222", `"localhost" is neither an address nor a CIDR block`},
	} {
		t.Run(tt.sources+" "+tt.remote, func(t *testing.T) {
			g := NewWithT(t)
			err := checkSourceAddress(tt.sources, tt.remote)
			if tt.err == "" {
				g.Expect(err).NotTo(HaveOccurred())
			} else {
				g.Expect(err).To(MatchError(ContainSubstring(tt.err)))
			}
		})
	}
}

// What the real ssh-keygen cannot make, or the integration tests do not reach: a host
// certificate, and a CA signature with SHA-1.
func TestCertificateLoginRefusals(t *testing.T) {
	ca, user := newSigner(t), newSigner(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCA, err := ssh.NewSignerFromKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	sha1CA, err := ssh.NewSignerWithAlgorithms(rsaCA.(ssh.AlgorithmSigner), []string{ssh.KeyAlgoRSA})
	if err != nil {
		t.Fatal(err)
	}
	cas, err := ParseUserCAs(authorizedKey(ca.PublicKey())+"\n"+authorizedKey(rsaCA.PublicKey()), "")
	if err != nil {
		t.Fatal(err)
	}
	trusted := &TrustedUserCAs{}
	trusted.Set(cas)
	s := &Server{cfg: Config{TrustedUserCAs: trusted}}
	remote := "127.0.0.1:50000"
	for _, tt := range []struct {
		name     string
		signer   ssh.Signer
		certType uint32
		err      string // empty: accepted
	}{
		{"user certificate", ca, ssh.UserCert, ""},
		{"rsa-sha2-512 signature", rsaCA, ssh.UserCert, ""},
		{"host certificate", ca, ssh.HostCert, "it is a host certificate"},
		{"SHA-1 signature", sha1CA, ssh.UserCert, "its CA signed it with SHA-1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			cert := &ssh.Certificate{Key: user.PublicKey(), CertType: tt.certType, ValidPrincipals: []string{"alice"},
				ValidBefore: ssh.CertTimeInfinity, KeyId: tt.name}
			g.Expect(cert.SignCert(rand.Reader, tt.signer)).To(Succeed())
			perms, err := s.certificateLogin(cert, remote, time.Now())
			if tt.err != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tt.err)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(perms.Extensions).To(HaveKeyWithValue(extUser, "alice"))
			g.Expect(perms.Extensions).To(HaveKeyWithValue(extCA, ssh.FingerprintSHA256(tt.signer.PublicKey())))
		})
	}
	// Trusting no CA, the same certificate is refused.
	trusted.Set(nil)
	cert := &ssh.Certificate{Key: user.PublicKey(), CertType: ssh.UserCert, ValidPrincipals: []string{"alice"}, ValidBefore: ssh.CertTimeInfinity}
	NewWithT(t).Expect(cert.SignCert(rand.Reader, ca)).To(Succeed())
	_, err = s.certificateLogin(cert, remote, time.Now())
	NewWithT(t).Expect(err).To(MatchError("no trusted user CA is configured"))
}

// Behind a load balancer speaking the PROXY protocol, source-address is checked against
// the client's address from the header, not the load balancer's: certificates made by the
// real ssh-keygen, used by the real ssh through a relay on 127.0.0.1.
func TestCertificateSourceAddressBehindProxy(t *testing.T) {
	trusted := &TrustedUserCAs{}
	e := newEnv(t, Config{ProxyProtocol: ProxyProtocolRequired,
		ProxyProtocolTrustedCIDRs: CIDRs{netip.MustParsePrefix("127.0.0.1/32")}, TrustedUserCAs: trusted})
	ca := e.sshKeygen("ca")
	caPub, err := os.ReadFile(ca + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	cas, err := ParseUserCAs(string(caPub), "")
	if err != nil {
		t.Fatal(err)
	}
	trusted.Set(cas)
	port := e.relay("127.0.0.1", proxyHeader(t, 2, "203.0.113.7"))
	for _, tt := range []struct {
		sources string
		code    int // 1: logged in (and refused a shell); 255: refused
	}{
		{"203.0.113.0/24", 1},
		{"127.0.0.1/32", 255},
	} {
		t.Run(tt.sources, func(t *testing.T) {
			g := NewWithT(t)
			key := e.sshKeygen("carol-" + strings.NewReplacer(".", "-", "/", "-").Replace(tt.sources))
			out, err := exec.Command("ssh-keygen", "-q", "-s", ca, "-I", "carol@"+tt.sources, "-n", "carol",
				"-O", "source-address="+tt.sources, key+".pub").CombinedOutput()
			g.Expect(err).NotTo(HaveOccurred(), string(out))
			stderr, code := e.sshTo(port, []string{key})
			g.Expect(code).To(Equal(tt.code), stderr)
			if tt.code == 255 {
				g.Expect(e.logs.with(`"msg"="Refused certificate"`, `the client address 203.0.113.7 is not in its source-address`)).NotTo(BeEmpty())
			}
		})
	}
}
