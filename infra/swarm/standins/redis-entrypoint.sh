#!/bin/sh
case "$1" in -*|*.conf) set -- redis-server "$@" ;; esac
if [ "$1" = "redis-server" ]; then
    case " $* " in *" --protected-mode "*) ;; *) set -- "$@" --protected-mode no ;; esac
fi
exec "$@"
