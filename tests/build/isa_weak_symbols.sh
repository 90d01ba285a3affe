#!/usr/bin/env bash
# The objects compiled for a wider ISA than the engine's baseline (the AVX-512 and AMX kernels)
# must define no weak (inline or template) function using that ISA: the linker keeps one copy of a
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
  # One pass over the disassembly: each function's name, and whether it uses what only
  # AVX-512 or AMX encode: zmm, mask or tile registers, the registers past 15 (xmm16-31 and
  # ymm16-31, on AVX-512VL's EVEX forms), or an instruction with no VEX form (on any width).
  found=$(objdump -d --no-show-raw-insn "$object" | awk -v weak="$weak" '
    BEGIN {
      n = split(weak, w, "\n"); for (i = 1; i <= n; i++) is_weak[w[i]] = 1
      evex_only = "^v(pternlog|permt2|permi2|dpbf16|cvtne2ps2bf16|cvtneps2bf16|rndscale|scalef|" \
                  "getexp|getmant|fixupimm|rcp14|rsqrt14|compress|expand|pcompress|pexpand|" \
                  "pconflict|plzcnt|prol|pror|psraq|pabsq|pmaxsq|pmaxuq|pminsq|pminuq|pmullq|" \
                  "pmovqb|pmovqw|pmovqd|pmovdb|pmovdw|pmovwb|pmovs[qdw][bwd]|pmovus[qdw][bwd]|" \
                  "broadcast[if]32x|broadcast[if]64x|extract[if]32x|extract[if]64x|" \
                  "insert[if]32x|insert[if]64x|cvtt?p[sd]2u?qq|cvtu?qq2p|cvtt?p[sd]2udq|" \
                  "cvtudq2p|alignq|blendmp|pblendm|permw|dbpsadbw|pmadd52)"
    }
    /^[0-9a-f]+ <.*>:$/ { name = $2; gsub(/^<|>:$/, "", name); next }
    !is_weak[name] { next }
    /zmm|%k[0-7]|tmm|%[xy]mm(1[6-9]|2[0-9]|3[01])/ || $2 ~ evex_only { bad[name] = 1 }
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
