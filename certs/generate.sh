#!/usr/bin/env bash
# Development and manual-install certificates for the webhook: a CA and a serving
# certificate whose SANs are the Service DNS names (and localhost for local runs).
# Never baked into the image. Usage: certs/generate.sh [--out DIR] [--service NAME]
#   [--namespace NS] [--days N] [--if-missing] [--new-ca]
set -euo pipefail

out="$(dirname "$0")/dev"
service=safe-termination
namespace=safe-termination
days=365
if_missing=false
new_ca=false
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --service) service="$2"; shift 2 ;;
    --namespace) namespace="$2"; shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --if-missing) if_missing=true; shift ;;
    --new-ca) new_ca=true; shift ;;
    -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "generate.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
command -v openssl >/dev/null || { echo "generate.sh: openssl is required (apt-get install -y openssl)" >&2; exit 1; }

mkdir -p "$out"
if $if_missing && [ -s "$out/tls.crt" ] && [ -s "$out/tls.key" ]; then
  exit 0
fi
umask 077
if $new_ca || [ ! -s "$out/ca.crt" ] || [ ! -s "$out/ca.key" ]; then
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$out/ca.key" -out "$out/ca.crt" -days "$days" \
    -subj "/CN=${service}-ca" 2>/dev/null
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/ext.cnf" <<CNF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:${service},DNS:${service}.${namespace},DNS:${service}.${namespace}.svc,DNS:${service}.${namespace}.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:::1
CNF
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -keyout "$tmp/tls.key" -out "$tmp/tls.csr" -subj "/CN=${service}.${namespace}.svc" 2>/dev/null
openssl x509 -req -in "$tmp/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
  -CAserial "$tmp/ca.srl" -out "$tmp/tls.crt" -days "$days" -extfile "$tmp/ext.cnf" 2>/dev/null
# Replace both files by rename so a running webhook never reads half a pair.
mv "$tmp/tls.key" "$out/tls.key"
mv "$tmp/tls.crt" "$out/tls.crt"
chmod 644 "$out/tls.crt" "$out/ca.crt"
echo "certificates in $out (caBundle: base64 -w0 $out/ca.crt)" >&2
