#!/bin/sh
# Test oracle (not shipped): the Python mbctl's man8env.env loader and application start,
# re-implemented from the facts recorded in issue 14 — NOT from its code and NOT from man8s:
#   lines that are empty or whose first non-blank character is '#' are skipped; key = text
#   before the first '=', value = everything after (a line without '=' is both); the line
#   becomes `export KEY="VALUE"` with only '"' escaped and is eval'ed; then the app runs as
#   /bin/sh -c "exec $MAN8S_APPLICATION_ARGS".
# A line whose eval fails (the original's shell stopped there) is skipped and reported on
# stderr as `oracle: ignored line N`, so a test can compare which lines were refused.
# Usage: python-mbctl-loader.sh ENVFILE [FALLBACK-COMMAND...]
__oracle_file=$1
shift
__oracle_n=0
while IFS= read -r __oracle_line || [ -n "$__oracle_line" ]; do
	__oracle_n=$((__oracle_n + 1))
	__oracle_rest=${__oracle_line#"${__oracle_line%%[![:blank:]]*}"}
	case $__oracle_rest in
	'' | '#'*) continue ;;
	esac
	__oracle_key=${__oracle_line%%=*}
	__oracle_value=${__oracle_line#*=}
	# Escape every '"' (and nothing else).
	__oracle_escaped=
	while :; do
		case $__oracle_value in
		*'"'*)
			__oracle_escaped=$__oracle_escaped${__oracle_value%%'"'*}'\"'
			__oracle_value=${__oracle_value#*'"'}
			;;
		*)
			__oracle_escaped=$__oracle_escaped$__oracle_value
			break
			;;
		esac
	done
	__oracle_cmd="export $__oracle_key=\"$__oracle_escaped\""
	# (No /dev/null needed: the trial run has its output closed.)
	if (eval "$__oracle_cmd") >&- 2>&-; then
		eval "$__oracle_cmd"
	else
		echo "oracle: ignored line $__oracle_n" >&2
	fi
done <"$__oracle_file"
unset __oracle_file __oracle_n __oracle_line __oracle_rest __oracle_key __oracle_value __oracle_escaped __oracle_cmd
if [ -n "$MAN8S_APPLICATION_ARGS" ]; then
	exec /bin/sh -c "exec $MAN8S_APPLICATION_ARGS"
fi
exec "$@"
