#!/usr/bin/env bash
# Make a development CA and a server certificate it signs, for Mosquitto's TLS listener.
#
#   scripts/gen-certs.sh [--force] [OUT_DIR] [HOSTNAME...]
#
# Writes into OUT_DIR (default var/certs):
#   ca.crt, ca.key          the CA: give ca.crt to devices and clients so they can verify
#                           the broker; keep ca.key private (0600)
#   server.crt, server.key  the broker's certificate (0600 key), valid for localhost,
#                           127.0.0.1, ::1 and every HOSTNAME given (names or IP addresses)
# then point the broker at them:
#   PAKU_MQTT_TLS_CERT_FILE=OUT_DIR/server.crt PAKU_MQTT_TLS_KEY_FILE=OUT_DIR/server.key
#   PAKU_MQTT_TLS_CA_FILE=OUT_DIR/ca.crt paku-iot broker-config --out ...
#
# Running it again keeps everything that exists: the CA always (devices trust it; delete
# ca.crt and ca.key yourself to start over), the server certificate unless --force is given,
# which issues a new one (with the HOSTNAMEs of this run) signed by the same CA.
# `paku-iot dev --tls` makes the same files in Python (src/paku_iot/broker/certs.py), so
# either can create them and the other reuses them.
#
# For development and private networks only: in production prefer a certificate from a
# public CA (see docs/operations.md, "TLS for MQTT").
set -euo pipefail

CA_DAYS=3650
# The longest validity Apple platforms accept for a server certificate.
SERVER_DAYS=825

usage() {
  # The comment block at the top of this file.
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

die() {
  echo "gen-certs: $*" >&2
  exit 1
}

force=false
out_dir=""
hostnames=()
for arg in "$@"; do
  case $arg in
    -h | --help)
      usage
      exit 0
      ;;
    --force) force=true ;;
    -*) die "unknown option $arg (see --help)" ;;
    *)
      if [ -z "$out_dir" ]; then
        out_dir=$arg
      else
        hostnames+=("$arg")
      fi
      ;;
  esac
done
out_dir=${out_dir:-var/certs}

command -v openssl >/dev/null 2>&1 || die "openssl is not installed"

# subjectAltName entries: localhost, loopback, then the extra names (IP or DNS).
san="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "${hostnames[@]+"${hostnames[@]}"}"; do
  if [[ $name =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || ($name == *:* && $name =~ ^[0-9A-Fa-f:.]+$) ]]; then
    san="$san,IP:$name"
  elif [[ $name =~ ^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; then
    san="$san,DNS:$name"
  else
    die "not a host name or IP address: $name"
  fi
done

ca_crt=$out_dir/ca.crt
ca_key=$out_dir/ca.key
server_crt=$out_dir/server.crt
server_key=$out_dir/server.key

umask 077
mkdir -p "$out_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A new EC P-256 key (what ESP-IDF's mbedTLS and every current client handle), 0600.
new_key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/key.pem" 2>/dev/null \
    || openssl ecparam -name prime256v1 -genkey -noout -out "$work/key.pem"
  chmod 0600 "$work/key.pem"
  mv -f "$work/key.pem" "$1"
}

serial() {
  echo "0x$(openssl rand -hex 16)"
}

ca_new=false
if [ -s "$ca_crt" ] && [ -s "$ca_key" ]; then
  echo "keeping the CA in $ca_crt"
else
  if [ -e "$ca_crt" ] || [ -e "$ca_key" ]; then
    echo "only one of ca.crt / ca.key exists in $out_dir: making a new CA" >&2
  fi
  new_key "$work/ca.key"
  cat >"$work/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
O = paku-iot
CN = paku-iot development CA
[v3_ca]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
  openssl req -x509 -new -config "$work/ca.cnf" -key "$work/ca.key" -sha256 \
    -days "$CA_DAYS" -set_serial "$(serial)" -out "$work/ca.crt"
  chmod 0644 "$work/ca.crt"
  mv -f "$work/ca.key" "$ca_key"
  mv -f "$work/ca.crt" "$ca_crt"
  ca_new=true
  echo "made a new CA: $ca_crt"
fi

if [ "$ca_new" = false ] && [ "$force" = false ] && [ -s "$server_crt" ] && [ -s "$server_key" ]; then
  echo "keeping the server certificate $server_crt (--force issues a new one)"
  # Say so when it lacks a name asked for now.
  present=$(openssl x509 -in "$server_crt" -noout -text | tr -d ' ')
  # (IPv6 addresses are printed expanded; only names and IPv4 addresses are compared.)
  for entry in ${san//,/ }; do
    [[ $entry == IP:*:* ]] && continue
    check=${entry/IP:/IPAddress:}
    if [[ $present != *"$check"* ]]; then
      echo "note: $server_crt does not name ${entry#*:}; run again with --force" >&2
    fi
  done
else
  new_key "$work/server.key"
  cat >"$work/server.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = localhost
[v3_server]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  openssl req -new -config "$work/server.cnf" -key "$work/server.key" -out "$work/server.csr"
  # (stderr kept aside: OpenSSL 3 reports its success there too.)
  openssl x509 -req -in "$work/server.csr" -CA "$ca_crt" -CAkey "$ca_key" \
    -set_serial "$(serial)" -days "$SERVER_DAYS" -sha256 \
    -extfile "$work/server.cnf" -extensions v3_server -out "$work/server.crt" 2>"$work/err" \
    || { cat "$work/err" >&2; die "could not sign the server certificate with $ca_key"; }
  chmod 0644 "$work/server.crt"
  mv -f "$work/server.key" "$server_key"
  mv -f "$work/server.crt" "$server_crt"
  echo "issued $server_crt for ${san//,/, }"
fi

chmod 0600 "$ca_key" "$server_key"
openssl verify -CAfile "$ca_crt" "$server_crt" >/dev/null \
  || die "$server_crt is not signed by $ca_crt: run again with --force"
echo "devices and clients verify the broker with $ca_crt"
