package sshserver

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// User certificates: an OpenSSH user certificate signed by a trusted CA logs in as the user
// its one principal names, without an SSHPublicKey. What that user may do is still the
// Authorizer's answer, as for a key.

// Permissions extensions of a certificate login.
const (
	extCA           = "gitssh-ca"
	extCertID       = "gitssh-cert-id"
	extCertSerial   = "gitssh-cert-serial"
	extForceCommand = "gitssh-force-command"
)

// The critical options gitssh honours. A certificate with any other is refused, as OpenSSH
// refuses one: a critical option is a restriction, and ignoring it would lift it.
const (
	optSourceAddress = "source-address"
	optForceCommand  = "force-command"
)

// userName is what a principal must look like: an SSHPublicKey's spec.user.
var userName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// UserCAs is a parsed set of trusted user certificate authorities and the certificates
// revoked among theirs. It does not change once parsed; see TrustedUserCAs.
type UserCAs struct {
	cas     map[string]ssh.PublicKey // by SHA256 fingerprint
	serials []serialRange
	ids     map[string]bool
	keys    map[string]bool // SHA256 fingerprints of revoked certified keys or CA keys
}

type serialRange struct{ from, to uint64 }

// Fingerprints returns the trusted CAs' SHA256 fingerprints, sorted.
func (u *UserCAs) Fingerprints() []string {
	if u == nil {
		return nil
	}
	fps := make([]string, 0, len(u.cas))
	for fp := range u.cas {
		fps = append(fps, fp)
	}
	slices.Sort(fps)
	return fps
}

// Revocations returns how many serial ranges, key IDs and keys are revoked.
func (u *UserCAs) Revocations() int {
	if u == nil {
		return 0
	}
	return len(u.serials) + len(u.ids) + len(u.keys)
}

// ParseUserCAs parses the trusted CAs, one OpenSSH public key per line as in sshd's
// TrustedUserCAKeys file, and the revocations, in the text form of ssh-keygen's key
// revocation list specification (ssh-keygen -k): one "serial: N", "serial: N-M", "id: KEY_ID",
// "key: PUBLIC_KEY" or "hash: SHA256:…" per line. Revocations apply to the certificates of
// every trusted CA. Blank lines and lines starting with '#' are ignored in both.
func ParseUserCAs(caKeys, revoked string) (*UserCAs, error) {
	u := &UserCAs{cas: map[string]ssh.PublicKey{}, ids: map[string]bool{}, keys: map[string]bool{}}
	err := eachLine(caKeys, func(n int, line string) error {
		key, _, options, _, err := ssh.ParseAuthorizedKey([]byte(line))
		switch {
		case err != nil:
			return fmt.Errorf("line %d is not an OpenSSH public key (%v); expected one CA key per line, such as the content of ca.pub", n, err)
		case len(options) > 0:
			return fmt.Errorf("line %d has authorized_keys options; give the bare CA public key", n)
		}
		if _, ok := key.(*ssh.Certificate); ok {
			return fmt.Errorf("line %d is a certificate; give the CA's plain public key", n)
		}
		if err := CheckClientKey(key); err != nil {
			return fmt.Errorf("line %d: the CA key is refused (%v); use an ed25519, ECDSA or RSA key of at least 2048 bits", n, err)
		}
		u.cas[ssh.FingerprintSHA256(key)] = key
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("trusted user CA keys: %w", err)
	}
	err = eachLine(revoked, func(n int, line string) error {
		kind, value, ok := strings.Cut(line, ":")
		value = strings.TrimSpace(value)
		if !ok || value == "" {
			return fmt.Errorf("line %d: expected \"serial: N\", \"id: KEY_ID\", \"key: PUBLIC_KEY\" or \"hash: SHA256:…\"", n)
		}
		switch strings.TrimSpace(kind) {
		case "serial":
			r, err := parseSerialRange(value)
			if err != nil {
				return fmt.Errorf("line %d: %w", n, err)
			}
			u.serials = append(u.serials, r)
		case "id":
			u.ids[value] = true
		case "key":
			key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(value))
			if err != nil {
				return fmt.Errorf("line %d: key: is not an OpenSSH public key (%v)", n, err)
			}
			if cert, ok := key.(*ssh.Certificate); ok {
				key = cert.Key // a pasted certificate revokes the key it certifies
			}
			u.keys[ssh.FingerprintSHA256(key)] = true
		case "hash":
			if !strings.HasPrefix(value, "SHA256:") {
				return fmt.Errorf("line %d: hash: must be a SHA256 fingerprint as ssh-keygen -l prints it (SHA256:…)", n)
			}
			u.keys[value] = true
		default:
			return fmt.Errorf("line %d: unknown revocation %q; expected serial, id, key or hash", n, kind)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("revoked certificates: %w", err)
	}
	return u, nil
}

// eachLine calls fn for every line that is not blank or a comment, numbered from 1.
func eachLine(text string, fn func(n int, line string) error) error {
	s := bufio.NewScanner(strings.NewReader(text))
	s.Buffer(nil, 1<<20)
	for n := 1; s.Scan(); n++ {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := fn(n, line); err != nil {
			return err
		}
	}
	return s.Err()
}

func parseSerialRange(s string) (serialRange, error) {
	from, to, isRange := strings.Cut(s, "-")
	lo, err := strconv.ParseUint(strings.TrimSpace(from), 10, 64)
	if err != nil {
		return serialRange{}, fmt.Errorf("serial: %q is not a serial number or range such as 42 or 40-49", s)
	}
	hi := lo
	if isRange {
		if hi, err = strconv.ParseUint(strings.TrimSpace(to), 10, 64); err != nil || hi < lo {
			return serialRange{}, fmt.Errorf("serial: %q is not a serial number or range such as 42 or 40-49", s)
		}
	}
	// ssh-keygen gives serial 0 to every certificate signed without -z: revoking it would
	// revoke them all, which is what removing the CA is for.
	if lo == 0 {
		return serialRange{}, fmt.Errorf("serial: 0 is every certificate signed without ssh-keygen -z; revoke those by id: or key: instead")
	}
	return serialRange{lo, hi}, nil
}

// revoked says why the certificate is revoked, or "".
func (u *UserCAs) revoked(cert *ssh.Certificate) string {
	for _, r := range u.serials {
		if cert.Serial >= r.from && cert.Serial <= r.to {
			return fmt.Sprintf("its serial %d is revoked", cert.Serial)
		}
	}
	if u.ids[cert.KeyId] {
		return fmt.Sprintf("its key ID %q is revoked", cert.KeyId)
	}
	if u.keys[ssh.FingerprintSHA256(cert.Key)] {
		return "its key is revoked"
	}
	if u.keys[ssh.FingerprintSHA256(cert.SignatureKey)] {
		return "its CA's key is revoked"
	}
	return ""
}

// TrustedUserCAs holds the UserCAs in force. The controllers replace them when their
// ConfigMap changes; each login reads them once, so a change applies from the next login
// on. Safe for concurrent use. A nil or empty TrustedUserCAs trusts no CA: certificates are
// refused.
type TrustedUserCAs struct{ current atomic.Pointer[UserCAs] }

// Set makes u the trusted CAs; nil trusts none.
func (t *TrustedUserCAs) Set(u *UserCAs) { t.current.Store(u) }

// Get returns the trusted CAs, nil when none are.
func (t *TrustedUserCAs) Get() *UserCAs {
	if t == nil {
		return nil
	}
	return t.current.Load()
}

// certificateLogin checks a user certificate offered by the client at remote ("host:port"),
// at time now, and returns the Permissions its login carries, or why it is refused. The
// client's proof of the certified key's private half is x/crypto's to check.
func (s *Server) certificateLogin(cert *ssh.Certificate, remote string, now time.Time) (*ssh.Permissions, error) {
	cas := s.cfg.TrustedUserCAs.Get()
	if cas == nil || len(cas.cas) == 0 {
		return nil, errors.New("no trusted user CA is configured")
	}
	if cert.CertType != ssh.UserCert {
		return nil, errors.New("it is a host certificate")
	}
	ca := ssh.FingerprintSHA256(cert.SignatureKey)
	if _, ok := cas.cas[ca]; !ok {
		return nil, fmt.Errorf("its CA %s is not trusted", ca)
	}
	// OpenSSH refuses SHA-1 CA signatures since 8.2, as gitssh refuses them from keys.
	if cert.Signature == nil || cert.Signature.Format == ssh.KeyAlgoRSA {
		return nil, errors.New("its CA signed it with SHA-1 (ssh-rsa); sign with ssh-keygen -t rsa-sha2-512, or an ed25519 CA")
	}
	if err := CheckClientKey(cert.Key); err != nil {
		return nil, fmt.Errorf("its key is refused: %v", err)
	}
	// One connection is one user: a certificate for several leaves us to guess, and one with
	// none is valid for every user in OpenSSH's eyes.
	if len(cert.ValidPrincipals) != 1 {
		return nil, fmt.Errorf("it names %d principals %q; it must name exactly one, the gitssh user (ssh-keygen -n alice)",
			len(cert.ValidPrincipals), cert.ValidPrincipals)
	}
	user := cert.ValidPrincipals[0]
	if !userName.MatchString(user) {
		return nil, fmt.Errorf("its principal %q is not a gitssh user name (lower-case letters, digits and '-')", user)
	}
	if why := cas.revoked(cert); why != "" {
		return nil, errors.New(why)
	}
	if after := time.Unix(int64(cert.ValidAfter), 0); cert.ValidAfter > uint64(now.Unix()) {
		return nil, fmt.Errorf("it is not valid before %s", after.UTC().Format(time.RFC3339))
	}
	if cert.ValidBefore != ssh.CertTimeInfinity && cert.ValidBefore <= uint64(now.Unix()) {
		return nil, fmt.Errorf("it expired at %s", time.Unix(int64(cert.ValidBefore), 0).UTC().Format(time.RFC3339))
	}
	// Unknown critical options, the principal, the validity window once more and the CA's
	// signature.
	checker := ssh.CertChecker{
		SupportedCriticalOptions: []string{optSourceAddress, optForceCommand},
		Clock:                    func() time.Time { return now },
	}
	if err := checker.CheckCert(user, cert); err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "ssh: "))
	}
	if sources, ok := cert.CriticalOptions[optSourceAddress]; ok {
		if err := checkSourceAddress(sources, remote); err != nil {
			return nil, err
		}
	}
	forced, hasForced := cert.CriticalOptions[optForceCommand]
	if hasForced {
		// Honoured by running it instead of whatever the client asks; only a git command
		// can run here, so any other cannot be honoured, and the login is refused.
		if _, err := ParseCommand(forced); err != nil {
			return nil, fmt.Errorf("its force-command %s is not a git command gitssh can run (%v)", quoteForMessage(forced), err)
		}
	}
	perms := &ssh.Permissions{Extensions: map[string]string{
		extUser:        user,
		extFingerprint: ssh.FingerprintSHA256(cert.Key),
		extCA:          ca,
		extCertID:      cert.KeyId,
		extCertSerial:  strconv.FormatUint(cert.Serial, 10),
	}}
	if hasForced {
		perms.Extensions[extForceCommand] = forced
	}
	return perms, nil
}

// checkSourceAddress checks remote ("host:port") against a source-address option:
// addresses and CIDR blocks, separated by commas.
func checkSourceAddress(sources, remote string) error {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return fmt.Errorf("its source-address %q cannot be checked against the client address %s", sources, remote)
	}
	addr := ap.Addr().Unmap()
	for _, s := range strings.Split(sources, ",") {
		s = strings.TrimSpace(s)
		prefix, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return fmt.Errorf("its source-address %q does not parse: %q is neither an address nor a CIDR block", sources, s)
			}
			prefix = netip.PrefixFrom(a, a.BitLen())
		}
		if prefix.Contains(addr) {
			return nil
		}
	}
	return fmt.Errorf("the client address %s is not in its source-address %q", addr, sources)
}

// certificateLogValues are the log values that name a certificate login.
func certificateLogValues(cert *ssh.Certificate) []any {
	return []any{"certificateID", cert.KeyId, "serial", cert.Serial, "principals", cert.ValidPrincipals,
		"ca", ssh.FingerprintSHA256(cert.SignatureKey)}
}

// identityLogValues name who logged in: the SSHPublicKey object of a key, or the CA and
// key ID of a certificate.
func identityLogValues(p *ssh.Permissions, id Identity) []any {
	if id.CA == "" {
		return []any{"user", id.String(), "key", id.Key.String(), "fingerprint", id.Fingerprint}
	}
	return []any{"user", id.User, "ca", id.CA, "certificateID", p.Extensions[extCertID],
		"serial", p.Extensions[extCertSerial], "fingerprint", id.Fingerprint}
}

// certificateRefusal is why a certificate may not log in, told apart by the metrics.
type certificateRefusal struct{ error }

// certificate is the public key callbacks' answer for a certificate: checked when it is
// offered, and again once its key is proven, as the trusted CAs may have changed meanwhile.
// source-address is checked against c.remote, the client's address, not the socket's peer,
// which may be a load balancer speaking the PROXY protocol. (x/crypto checks the peer, so
// the option is never handed back to it in Permissions.CriticalOptions.)
func (c *conn) certificate(cert *ssh.Certificate, verified bool) (*ssh.Permissions, error) {
	perms, err := c.s.certificateLogin(cert, c.remote, time.Now())
	switch {
	case err != nil:
		c.log.Info("Refused certificate", append(certificateLogValues(cert), "reason", err.Error())...)
		return nil, certificateRefusal{err}
	case verified:
		c.log.Info("Accepted certificate", append(certificateLogValues(cert), "user", perms.Extensions[extUser],
			"forceCommand", perms.Extensions[extForceCommand])...)
	}
	return perms, nil
}
