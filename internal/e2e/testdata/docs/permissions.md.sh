# The people of the worked example have accounts on the gateway.
for u in nina alice bob carol; do
	useradd --no-create-home --home-dir /nonexistent --shell /bin/bash "$u" || fail "useradd $u"
done
gateway
# Their files (the configs they issue) go to a directory all may write.
mkdir -m 1777 /tmp/work && cd /tmp/work
