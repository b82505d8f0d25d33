//! The test kit: real OpenSSH `sshd` nodes, TLS kubelet stand-ins, an
//! apiserver-like CONNECT client, and the PKI they share.
