# `make help` and `make help-check`: read the makefiles named as arguments
# (the Makefile passes $(MAKEFILE_LIST)).
#
# A target is public when it is listed in .PHONY. Its help is the text after
# `## ` on its rule line; its group is the last `##@ GROUP` line above it in
# the same file (build, test, bench, demo or other; "other" before any).
#
#   awk -f mk/help.awk FILES...              print the public targets by group
#   awk -v mode=check -f mk/help.awk FILES...  fail unless every .PHONY target
#                                            has help, every target with help
#                                            is .PHONY, and every group is known
BEGIN {
	ngroups = split("build test bench demo other", groups, " ")
	for (i = 1; i <= ngroups; i++) known[groups[i]] = 1
}
FNR == 1 { group = "other" }
/^##@ / { group = $2; groupline[FILENAME ":" FNR] = group; next }
/^\.PHONY[ \t]*:/ {
	line = $0
	sub(/^\.PHONY[ \t]*:/, "", line)
	n = split(line, names, /[ \t]+/)
	for (i = 1; i <= n; i++) if (names[i] != "") phony[names[i]] = FILENAME
	next
}
/^[a-zA-Z0-9_.-]+[ \t]*:([^=].*)?## / {
	name = $0
	sub(/[ \t]*:.*/, "", name)
	text = $0
	sub(/^[^#]*## /, "", text)
	help[name] = text
	where[name] = FILENAME ":" FNR
	grp[name] = group
	if (!(group in known)) bad[++nbad] = FILENAME ":" FNR ": target " name ": unknown group \"" group "\" (want one of: build test bench demo other)"
}
END {
	if (mode == "check") {
		for (t in phony) if (!(t in help)) bad[++nbad] = phony[t] ": .PHONY target " t " has no `## help` text on its rule line"
		for (t in help) if (!(t in phony)) bad[++nbad] = where[t] ": target " t " has help but is not .PHONY"
		for (i = 1; i <= nbad; i++) print "help-check: " bad[i] > "/dev/stderr"
		exit nbad > 0
	}
	width = 0
	for (t in help) if (length(t) > width) width = length(t)
	for (g = 1; g <= ngroups; g++) {
		n = 0
		for (t in help) if (grp[t] == groups[g]) list[++n] = t
		if (n == 0) continue
		# insertion sort (mawk has no asort)
		for (i = 2; i <= n; i++) {
			v = list[i]
			for (j = i - 1; j > 0 && list[j] > v; j--) list[j + 1] = list[j]
			list[j + 1] = v
		}
		printf "%s%s:\n", (g > 1 && printed ? "\n" : ""), groups[g]
		printed = 1
		for (i = 1; i <= n; i++) printf "  %-*s  %s\n", width, list[i], help[list[i]]
	}
}
