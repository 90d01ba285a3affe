#!/usr/bin/env bash
# The objects compiled for a wider ISA than the engine's baseline (the AVX-512 and AMX kernels)
# must define no weak (inline or template) function in that ISA: the linker keeps one copy of a
# weak function for the whole program, and if it is theirs, a lesser CPU faults on it (invalid
# opcode) wherever the program calls it.
#   isa_weak_symbols.sh OBJECT...   (the engine's objects; those named *avx512* or *amx* are read)
set -euo pipefail
status=0 checked=0
for object in "$@"; do
  case $(basename "$object") in *avx512* | *amx*) ;; *) continue ;; esac
  checked=$((checked + 1))
  weak=$(nm "$object" | awk '$2 == "W" { print $3 }')
  [[ -n $weak ]] || continue
  # One pass over the disassembly: each function's name, and whether it uses AVX-512's zmm or
  # mask registers or AMX tiles.
  found=$(objdump -d --no-show-raw-insn "$object" | awk -v weak="$weak" '
    BEGIN { n = split(weak, w, "\n"); for (i = 1; i <= n; i++) is_weak[w[i]] = 1 }
    /^[0-9a-f]+ <.*>:$/ { name = $2; gsub(/^<|>:$/, "", name); next }
    is_weak[name] && /zmm|%k[0-7]|tmm/ { bad[name] = 1 }
    END { for (s in bad) print s }')
  if [[ -n $found ]]; then
    echo "$object defines weak functions in its own ISA:" >&2
    c++filt <<<"$found" | sed 's/^/  /' >&2
    status=1
  fi
done
((checked > 0)) || { echo "no *avx512* or *amx* object among the arguments" >&2; exit 1; }
((status)) || echo "$checked wider-ISA objects: no weak function in their ISA"
exit "$status"
