//! Generates the Konnectivity messages and gRPC services from
//! proto/konnectivity.proto with a pure-Rust protobuf compiler (protox), so
//! building needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/konnectivity.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The generated `connect` constructor would clash with the `Connect` rpc.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
