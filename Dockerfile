# Multi-stage build of both Attune images (no cgo, static binaries, distroless,
# non-root). Build one with --target:
#   docker build --target manager -t ghcr.io/attune-io/attune-operator:v0.1.0 --build-arg VERSION=v0.1.0 .
#   docker build --target engine  -t ghcr.io/attune-io/attune-engine:v0.1.0  --build-arg VERSION=v0.1.0 .
FROM golang:1.26 AS build
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0
RUN go build -trimpath -ldflags "-s -w -X github.com/attune-io/attune/internal/version.Version=${VERSION}" -o /out/manager ./cmd/manager && \
    go build -trimpath -ldflags "-s -w -X github.com/attune-io/attune/internal/version.Version=${VERSION}" -o /out/engine ./cmd/engine

FROM gcr.io/distroless/static-debian12:nonroot AS manager
ARG VERSION=dev
LABEL org.opencontainers.image.title="attune-operator" org.opencontainers.image.version="${VERSION}" org.opencontainers.image.source="https://github.com/attune-io/attune"
COPY --from=build /out/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]

FROM gcr.io/distroless/static-debian12:nonroot AS engine
ARG VERSION=dev
LABEL org.opencontainers.image.title="attune-engine" org.opencontainers.image.version="${VERSION}" org.opencontainers.image.source="https://github.com/attune-io/attune"
COPY --from=build /out/engine /engine
USER 65532:65532
ENTRYPOINT ["/engine"]
