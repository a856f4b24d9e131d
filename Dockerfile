# hearsay in an image with no base OS: one statically linked binary.
# No registry is needed: the binary is built on the host first, by
#   docker/build.sh
# (or: RUSTFLAGS="-C target-feature=+crt-static" cargo build --release \
#        --target x86_64-unknown-linux-gnu --bin hearsay)
FROM scratch
COPY target/docker/hearsay /hearsay
# Writable data dir owned by the unprivileged user (scratch has no useradd).
COPY --chown=10001:10001 docker/empty/ /data/
USER 10001:10001
VOLUME ["/data"]
ENV HEARSAY_DATA_DIR=/data \
    HEARSAY_LISTEN=0.0.0.0:7000 \
    HEARSAY_LOG_FORMAT=json
EXPOSE 7000
HEALTHCHECK --interval=2s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/hearsay", "health", "--node", "http://127.0.0.1:7000"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/hearsay"]
CMD ["serve"]
