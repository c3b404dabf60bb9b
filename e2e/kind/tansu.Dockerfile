# tansu 0.6.0 from crates.io, built the way .ci/install-peers.sh builds it
# (features dynostore,libsql: without a storage engine it cannot start).
FROM docker.io/library/rust:1.95-bookworm AS build
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo install tansu --version 0.6.0 --locked --features dynostore,libsql --root /out

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/bin/tansu /usr/local/bin/tansu
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tansu"]
