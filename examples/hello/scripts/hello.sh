#!/bin/sh
# Greets the caller and lists its arguments, one per line.
echo "Hello from skill '$(hostname)', running as uid $(id -u)."
if [ $# -eq 0 ]; then
    echo "No arguments given."
    exit 0
fi
i=1
for arg in "$@"; do
    echo "arg $i: $arg"
    i=$((i + 1))
done
