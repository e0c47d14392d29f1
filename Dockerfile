# syntax=docker/dockerfile:1
# The webhook and the agent in one image: `serve` by default, `agent` for the DaemonSet.
# The build stage runs the exact Node the tests ran (package.json's `node` devDependency).
# Pin both images by digest (`@sha256:…`) when you build: these machines reach no image
# registry to look the digests up.
ARG NODE_MAJOR=26
ARG NODE_VERSION=26.10.0

FROM node:${NODE_VERSION}-trixie-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: the image's own Node builds; the pinned `node` package is for development.
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npx tsc -p tsconfig.build.json && npm prune --omit=dev --ignore-scripts

# The agent's conntrack reaper deletes entries with Debian's conntrack tool (netlink):
# the binary and the three libraries it links beyond libc, in the multiarch library
# directory of the image's architecture (resolved: Debian 13 merges /lib into /usr/lib).
FROM debian:trixie-slim AS conntrack
RUN apt-get update && apt-get install -y --no-install-recommends conntrack \
 && mkdir -p /out/usr/sbin && cp /usr/sbin/conntrack /out/usr/sbin/ \
 && for l in $(ldd /usr/sbin/conntrack | awk '/libnetfilter_conntrack|libmnl|libnfnetlink/ { print $3 }'); do \
      d="/out$(readlink -f "$(dirname "$l")")"; mkdir -p "$d" && cp -L "$l" "$d/"; \
    done

FROM gcr.io/distroless/nodejs${NODE_MAJOR}-debian13:nonroot
COPY --from=conntrack /out/ /
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/nodejs/bin/node", "/app/dist/src/cli/main.js"]
CMD ["serve"]
