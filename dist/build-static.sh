#!/usr/bin/env bash
# Builds a fully static x86_64 Linux pgfrost (no dynamic loader: it runs in Alpine, Debian,
# distroless images and an empty chroot) with glibc's static linking, and prints its path.
# Names are then resolved by pgfrost itself from /etc/hosts and /etc/resolv.conf (src/net.rs).
#   bash dist/build-static.sh            ->  target/x86_64-unknown-linux-gnu/dist/pgfrost
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# --target keeps build scripts and proc macros (which the host loads dynamically) out of the
# static flags. getrandom finds glibc's getrandom() with dlsym, which a static binary cannot do,
# and then falls back to /dev/urandom, which a bare chroot lacks: ask it for the system call.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"" \
  cargo build --locked --profile dist --target x86_64-unknown-linux-gnu --bin pgfrost >&2
out=target/x86_64-unknown-linux-gnu/dist/pgfrost
echo "$(du -m "$out" | cut -f1) MiB, $("$out" --version)" >&2
echo "$out"
