#!/bin/sh
# Counts the words of stdin, then of each input file.
echo "stdin: $(wc -w | tr -d ' ') words"
for file in /workspace/in/*; do
    [ -f "$file" ] && echo "$(basename "$file"): $(wc -w < "$file" | tr -d ' ') words"
done
exit 0
