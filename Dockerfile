# syntax=docker/dockerfile:1
# Build: the same command as `make build`, which CI runs.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} go build -trimpath -o /gitssh .

# Run: gitssh executes git's pack commands, so the image needs git (and nothing else).
FROM alpine:3.22
RUN apk add --no-cache git \
 && addgroup -S -g 65532 gitssh \
 && adduser -S -D -H -u 65532 -G gitssh -h /tmp -s /sbin/nologin gitssh \
 && mkdir -p /var/lib/gitssh/repositories \
 && chown 65532:65532 /var/lib/gitssh/repositories
COPY --from=build /gitssh /usr/local/bin/gitssh
USER 65532:65532
ENV HOME=/tmp
WORKDIR /var/lib/gitssh
EXPOSE 2222
ENTRYPOINT ["/usr/local/bin/gitssh"]
