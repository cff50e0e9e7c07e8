"""What the tests are built from, not tests themselves: the in-process simulation (`sim`),
clusters of real daemons (`cluster`), namespaces and veth links (`netns`, `sweep`), a fake
/sys/class/net (`sysnet`), the booted container (`container`), the reference C peer
(`peer`), the burst sender (`burst`), the fuzz soak (`soak`) and the agent helpers several
test files share (`agent_io`)."""
