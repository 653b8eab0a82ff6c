# The runtime stage of ../Dockerfile around a binary built on the host, for
# machines where no registry answers (this project's CI). The build context
# is a directory holding the binary as `rocket-rides`; BASE is a local Debian
# bookworm image (TEST_DEBIAN_IMAGE from ../shared/ci/offline-images):
#
#   docker build -f deploy/runtime.Dockerfile --build-arg BASE=$TEST_DEBIAN_IMAGE \
#     -t rocket-rides <dir with the binary>
#
# The host must be Debian bookworm (or older glibc) for the binary to run.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home rocket \
 && install -d -o rocket -m 700 /var/lib/rocket-rides/keys
COPY rocket-rides /usr/local/bin/rocket-rides
USER rocket
EXPOSE 5000 9090
ENTRYPOINT ["rocket-rides"]
CMD ["start"]
