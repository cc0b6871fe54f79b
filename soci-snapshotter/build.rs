//! Generates the containerd snapshots gRPC **server** and the CRI ImageService server and client
//! from the vendored protos (see proto/README.md).
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
    // The Kubernetes CRI ImageService (proto/k8s.io/...): server for the `[cri_keychain]` proxy,
    // client for forwarding to `image_service_path` (and for tests).
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(
            &["proto/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto"],
            &["proto"],
        )?;
    Ok(())
}
