//! Generates the containerd snapshots gRPC **server** from the vendored protos (see proto/README.md).
//! Message types are not generated: they are taken from `containerd-client` (same protos, same
//! prost/tonic versions) so the server and our containerd client calls share one set of types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .extern_path(".containerd.types", "::containerd_client::types")
        .extern_path(
            ".containerd.services.snapshots.v1",
            "::containerd_client::services::v1::snapshots",
        )
        .compile_protos(
            &["proto/github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto"],
            &["proto"],
        )?;
    Ok(())
}
