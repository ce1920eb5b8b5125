#!/bin/sh
# Fetches the example API's status document.
set -eu
wget -q -T 10 -O - "https://api.example.com/v1/status"
