# syntax=docker/dockerfile:1
# The binary is built outside the image and copied in, as release tools such as goreleaser
# do: `make build` (CGO_ENABLED=0, so it runs on any base), then
#   docker build -t REGISTRY/gitssh:TAG . && docker push REGISTRY/gitssh:TAG
FROM debian:bookworm-slim
# gitssh runs git's pack commands (git). ssh-keyscan and ssh-keygen (openssh-client) are for
# the chart's `helm test` Pod, which runs this same image. tini is PID 1: git gc --auto
# detaches after a push, and the orphan is reaped only by the container's init.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 65532 gitssh \
 && useradd -u 65532 -g gitssh -M -d /tmp -s /usr/sbin/nologin gitssh \
 && mkdir -p /var/lib/gitssh/repositories \
 && chown 65532:65532 /var/lib/gitssh/repositories
# gitssh-pack-hook: git's pack-objects hook for the pack cache, found beside gitssh.
COPY bin/gitssh bin/gitssh-pack-hook /usr/local/bin/
USER 65532:65532
ENV HOME=/tmp
WORKDIR /var/lib/gitssh
EXPOSE 2222
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/gitssh"]
