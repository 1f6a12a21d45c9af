package sshserver

import (
	"errors"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

func TestParseCommand(t *testing.T) {
	ok := func(service, owner, project string) Command {
		return Command{Service: service, Owner: owner, Project: project}
	}
	tests := []struct {
		in      string
		want    Command
		wantErr string // "unknown" or "path"
	}{
		{in: "git-upload-pack '/acme/api.git'", want: ok(UploadPack, "acme", "api")},
		{in: "git-receive-pack '/acme/api.git'", want: ok(ReceivePack, "acme", "api")},
		{in: "git-upload-archive '/acme/api.git'", want: ok(UploadArchive, "acme", "api")},
		{in: "git upload-pack '/acme/api.git'", want: ok(UploadPack, "acme", "api")},
		{in: "git receive-pack 'acme/api'", want: ok(ReceivePack, "acme", "api")},
		{in: "git-upload-pack 'acme/api.git'", want: ok(UploadPack, "acme", "api")},
		{in: "git-upload-pack /acme/api.git", want: ok(UploadPack, "acme", "api")},
		{in: "git-upload-pack acme/api", want: ok(UploadPack, "acme", "api")},
		{in: `git-upload-pack "/acme/api.git"`, want: ok(UploadPack, "acme", "api")},
		{in: "git-upload-pack '/A-1/b_2.c-3.git'", want: ok(UploadPack, "A-1", "b_2.c-3")},
		{in: "git-upload-pack '/" + strings.Repeat("a", 100) + "/" + strings.Repeat("b", 100) + ".git'",
			want: ok(UploadPack, strings.Repeat("a", 100), strings.Repeat("b", 100))},

		{in: "", wantErr: "unknown"},
		{in: "ls", wantErr: "unknown"},
		{in: "sh -c 'git-upload-pack /acme/api.git'", wantErr: "unknown"},
		{in: "git-upload-pack", wantErr: "path"},
		{in: "git upload-pack", wantErr: "path"},
		{in: "git", wantErr: "unknown"},
		{in: "git status", wantErr: "unknown"},
		{in: "git-upload-packx '/acme/api.git'", wantErr: "unknown"},
		{in: "GIT-UPLOAD-PACK '/acme/api.git'", wantErr: "unknown"},
		{in: " git-upload-pack '/acme/api.git'", wantErr: "unknown"},
		{in: "git-upload-pack\t'/acme/api.git'", wantErr: "unknown"},
		{in: "touch /tmp/x '/acme/api.git'", wantErr: "unknown"},
		{in: "git-upload-pack --upload-pack=touch /tmp/x", wantErr: "path"},
		{in: "git-upload-pack '--upload-pack=touch /tmp/x'", wantErr: "path"},
		{in: "git-upload-pack '/acme/api.git' extra", wantErr: "path"},
		{in: "git-upload-pack  '/acme/api.git'", wantErr: "path"},
		{in: "git-upload-pack '/acme/api.git' ", wantErr: "path"},
		{in: "git-upload-pack '../etc/passwd'", wantErr: "path"},
		{in: "git-upload-pack '/acme/../api'", wantErr: "path"},
		{in: "git-upload-pack '/acme/a..b'", wantErr: "path"},
		// Shape-valid: it names project "etc/passwd", which the authorizer then refuses.
		{in: "git-upload-pack '/etc/passwd'", want: ok(UploadPack, "etc", "passwd")},
		{in: "git-upload-pack '/var/lib/x.git'", wantErr: "path"},
		{in: "git-upload-pack '~/acme/api.git'", wantErr: "path"},
		{in: "git-upload-pack '~acme/api.git'", wantErr: "path"},
		{in: "git-upload-pack 'acme/api;rm -rf /'", wantErr: "path"},
		{in: "git-upload-pack 'acme/proj;rm'", wantErr: "path"},
		{in: "git-upload-pack 'a'b", wantErr: "path"},
		{in: "git-upload-pack ''", wantErr: "path"},
		{in: "git-upload-pack '", wantErr: "path"},
		{in: `git-upload-pack "acme/api'`, wantErr: "path"},
		{in: `git-upload-pack 'acme/a\'b'`, wantErr: "path"},
		{in: "git-upload-pack 'acme/api\n'", wantErr: "path"},
		{in: "git-upload-pack 'acme/api\x00'", wantErr: "path"},
		{in: "git-upload-pack 'acme/api\r'", wantErr: "path"},
		{in: "git-upload-pack '//acme/api.git'", wantErr: "path"},
		{in: "git-upload-pack '/acme/api.git/'", wantErr: "path"},
		{in: "git-upload-pack '/acme/.git'", wantErr: "path"},
		{in: "git-upload-pack '/.acme/api.git'", wantErr: "path"},
		{in: "git-upload-pack '/-acme/api.git'", wantErr: "path"},
		{in: "git-upload-pack '/acme/-api.git'", wantErr: "path"},
		{in: "git-upload-pack '/acme/api$x'", wantErr: "path"},
		{in: "git-upload-pack '/acme/ápi'", wantErr: "path"},
		{in: "git-upload-pack '/" + strings.Repeat("a", 101) + "/b'", wantErr: "path"},
		{in: "git-upload-pack '/acme/" + strings.Repeat("a", 10000) + "'", wantErr: "path"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			g := NewWithT(t)
			got, err := ParseCommand(tt.in)
			switch tt.wantErr {
			case "":
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(got).To(Equal(tt.want))
			case "unknown":
				g.Expect(err).To(MatchError(ErrUnknownCommand))
			case "path":
				var pe *PathError
				g.Expect(errors.As(err, &pe)).To(BeTrue(), "got %v", err)
				g.Expect(len(pe.Error())).To(BeNumerically("<", 400), "messages stay short")
				g.Expect(pe.Error()).NotTo(ContainSubstring("\n"))
			}
		})
	}
}

func TestQuoteForMessage(t *testing.T) {
	g := NewWithT(t)
	g.Expect(quoteForMessage("a\nb\x00")).To(Equal(`"a\nb\x00"`))
	long := quoteForMessage(strings.Repeat("é", 1000))
	g.Expect(long).To(HaveSuffix("… (2000 bytes)"))
	g.Expect(len(long)).To(BeNumerically("<", 120))
}

// FuzzParseCommand checks that whatever ParseCommand accepts is a safe
// OWNER/PROJECT pair and that parsing is stable under git's own quoting.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"git-upload-pack '/acme/api.git'",
		"git receive-pack 'acme/api'",
		`git-upload-archive "/a/b.git"`,
		"git-upload-pack '../etc/passwd'",
		"git-upload-pack 'a'b",
		"git-upload-pack '--upload-pack=touch /tmp/x'",
		"git-upload-pack 'acme/api\x00'",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cmd, err := ParseCommand(s)
		if err != nil {
			if !errors.Is(err, ErrUnknownCommand) {
				var pe *PathError
				if !errors.As(err, &pe) {
					t.Fatalf("unexpected error type %T", err)
				}
				if strings.ContainsAny(pe.Error(), "\n\r\x00") {
					t.Fatalf("message carries control characters: %q", pe.Error())
				}
			}
			return
		}
		switch cmd.Service {
		case UploadPack, ReceivePack, UploadArchive:
		default:
			t.Fatalf("unexpected service %q", cmd.Service)
		}
		for _, seg := range []string{cmd.Owner, cmd.Project} {
			if checkSegment(seg) != nil || strings.ContainsAny(seg, "/\\'\" \x00\n~") || strings.HasPrefix(seg, "-") {
				t.Fatalf("accepted unsafe name %q from %q", seg, s)
			}
		}
		again, err := ParseCommand(cmd.Service + " '/" + cmd.Owner + "/" + cmd.Project + ".git'")
		if err != nil || again != cmd {
			t.Fatalf("re-parse of %+v gave %+v, %v", cmd, again, err)
		}
	})
}
