# syntax=docker/dockerfile:1
# The binary is built outside the image and copied in, as release tools such as goreleaser
# do, and so is the git release the image compiles: `make build git-source` (CGO_ENABLED=0,
# so gitssh runs on any base; hack/git-source.sh checks git's tarball against its SHA-256), then
#   docker build -t REGISTRY/gitssh:TAG . && docker push REGISTRY/gitssh:TAG

# git, as hack/git-build.sh says: OpenSSL's SHA-1 for the checksums of the packs it
# writes and reads, which were most of git's CPU per clone with Debian's build.
FROM debian:bookworm-slim AS git
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev make libssl-dev zlib1g-dev xz-utils \
 && rm -rf /var/lib/apt/lists/*
COPY bin/git-source/git.tar.xz hack/git-build.sh /src/
RUN /src/git-build.sh /src/git.tar.xz /usr/local /out

FROM debian:bookworm-slim
# gitssh runs git's pack commands (git, built above; libssl3 for its SHA-1). ssh-keyscan and
# ssh-keygen (openssh-client) are for the chart's `helm test` Pod, which runs this same image.
# tini is PID 1: git gc --auto detaches after a push, and the orphan is reaped only by the
# container's init.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 openssh-client tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 65532 gitssh \
 && useradd -u 65532 -g gitssh -M -d /tmp -s /usr/sbin/nologin gitssh \
 && mkdir -p /var/lib/gitssh/repositories \
 && chown 65532:65532 /var/lib/gitssh/repositories
COPY --from=git /out/usr/local/ /usr/local/
# gitssh-pack-hook: git's pack-objects hook for the pack cache, found beside gitssh.
COPY bin/gitssh bin/gitssh-pack-hook /usr/local/bin/
USER 65532:65532
ENV HOME=/tmp
WORKDIR /var/lib/gitssh
EXPOSE 2222
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/gitssh"]
