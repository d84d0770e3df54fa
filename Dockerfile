# syntax=docker/dockerfile:1
# Base images are pinned by digest: a tag can be moved to other bytes, a digest cannot. Both digests
# are the multi-platform index digests published for these tags (golang:1.27.1 as of 2026-09,
# distroless :nonroot as of 2026-08-26; that tag moves often). To refresh them:
#   docker buildx imagetools inspect golang:1.27.1 --format '{{json .Manifest.Digest}}'
#   docker buildx imagetools inspect gcr.io/distroless/static-debian12:nonroot --format '{{json .Manifest.Digest}}'
# (or `crane digest IMAGE`), then run `bash .ci/run`.

# Build: a static binary (no cgo), reproducible paths.
FROM golang:1.27.1@sha256:f773aa2679c165b2d4ccf04c1de9ef5f34c0e4fd7008b3c449d4cdc47d83af55 AS build
# The Go release that compiles the service, whatever the image carries: the go command fetches it as
# a checksum-verified module. CI scans exactly this release with govulncheck (.ci/run) and builds
# with it (.ci/container-check.sh); raise it when govulncheck reports a fixed standard library.
ENV GOTOOLCHAIN=go1.27.3
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/clinicalapi .

# Run: distroless static (CA certificates and tzdata, no shell), as the nonroot user (uid 65532).
FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab
COPY --from=build /out/clinicalapi /clinicalapi
# The Patient journal: the nonroot user's home exists in this image and is theirs. Mount a volume here.
ENV DATA_DIR=/home/nonroot/data
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/clinicalapi"]
