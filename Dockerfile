# syntax=docker/dockerfile:1
# Build: a static binary (no cgo), reproducible paths.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/clinicalapi .

# Run: distroless static (CA certificates and tzdata, no shell), as the nonroot user (uid 65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/clinicalapi /clinicalapi
# The Patient journal: the nonroot user's home exists in this image and is theirs. Mount a volume here.
ENV DATA_DIR=/home/nonroot/data
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/clinicalapi"]
