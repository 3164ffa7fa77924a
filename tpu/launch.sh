#!/bin/sh
# Thin wrapper: tpu/launch.sh create|setup|run|logs|stop|delete [options]; see tpu/launch.py.
exec python3 "$(dirname "$0")/launch.py" "$@"
