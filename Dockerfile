# The rocket-rides image: one binary, every process (api, completer,
# enqueuer, worker, reaper, simulator, fake-stripe, migrate, up) chosen by
# the first argument. Built as usual where a registry answers:
#
#   docker build -t rocket-rides .
#
# Where none does (this project's CI), deploy/runtime.Dockerfile builds the
# same runtime stage around a binary built on the host; see the README.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p rocket-rides \
 && cp target/release/rocket-rides /rocket-rides

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home rocket \
 && install -d -o rocket -m 700 /var/lib/rocket-rides/keys
COPY --from=build /rocket-rides /usr/local/bin/rocket-rides
USER rocket
EXPOSE 5000 9090
ENTRYPOINT ["rocket-rides"]
CMD ["start"]
