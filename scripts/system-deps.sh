#!/usr/bin/env bash
# Installs the Debian packages the checks need, but only for what is missing.
#
# Each line of the table is "NEED PACKAGE": NEED is a command looked up on PATH, or an
# absolute path that must exist (the Go libraries the Go client builds against, offline). A need that is already met, by whatever package or image
# provided it, is used as it is, so nothing the machine already has is replaced (CI images
# ship their own kubectl, for one). Only the packages for unmet needs are installed.
set -euo pipefail

TABLE='
prometheus          prometheus
promtool            prometheus
redis-server        redis-server
redis-cli           redis-tools
protoc              protobuf-compiler
protoc-gen-go       protoc-gen-go
protoc-gen-go-grpc  protoc-gen-go-grpc
grpc_java_plugin    protobuf-compiler-grpc-java-plugin
go                  golang-go
/usr/share/gocode/src/google.golang.org/grpc                             golang-google-grpc-dev
/usr/share/gocode/src/github.com/golang/protobuf/proto                   golang-github-golang-protobuf-1-5-dev
/usr/share/gocode/src/google.golang.org/protobuf/proto                   golang-google-protobuf-dev
/usr/share/gocode/src/google.golang.org/genproto/googleapis/rpc/errdetails golang-google-genproto-dev
'

# `system-deps.sh bench`: what `make bench` needs besides: h2load, a load generator in C that
# keeps the client's own Python cost off the measurements of unary calls.
if [ "${1-}" = bench ]; then
  TABLE='
h2load              nghttp2-client
'
fi

met() {
  case "$1" in
    /*) [ -e "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

missing=()
while read -r need package; do
  [ -n "$need" ] || continue
  if ! met "$need"; then
    case " ${missing[*]-} " in *" $package "*) ;; *) missing+=("$package") ;; esac
  fi
done <<<"$TABLE"

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
echo "installing Debian packages for what is missing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

still=()
while read -r need package; do
  [ -n "$need" ] || continue
  met "$need" || still+=("$need ($package)")
done <<<"$TABLE"
if [ ${#still[@]} -ne 0 ]; then
  echo "still missing after the install: ${still[*]}" >&2
  exit 1
fi
