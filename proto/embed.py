#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Embed a JSON file as a C string (after checking that it parses)."""
import json
import sys

src, dst, name = sys.argv[1:4]
text = open(src, encoding="utf-8").read()
compact = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=True)
data = compact.encode("ascii") + b"\0"
with open(dst, "w", encoding="ascii") as f:
    f.write("/* generated from %s by proto/embed.py; do not edit */\n" % src.split("/")[-1])
    # A byte array: string literals longer than 4095 bytes are not portable C.
    f.write("const char %s[%d] = {\n" % (name, len(data)))
    for i in range(0, len(data), 16):
        f.write("\t" + ", ".join("0x%02x" % b for b in data[i:i + 16]) + ",\n")
    f.write("};\n")
