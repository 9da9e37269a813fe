//! The papers' networks, each described once in `networks/<name>.toml` (a [`NetworkSpec`]): the
//! training presets name them (`model = "vgg16-cifar"`) and the hardware models read their layer
//! shapes from them, so a change to a network is made in one file.

use crate::spec::NetworkSpec;

/// Built-in network descriptions: `(name, TOML)`.
pub const NETWORKS: &[(&str, &str)] = &[
    ("vgg16-cifar", include_str!("../networks/vgg16-cifar.toml")),
    (
        "preresnet20-cifar",
        include_str!("../networks/preresnet20-cifar.toml"),
    ),
];

/// The description text of a built-in network.
pub fn text(name: &str) -> Result<&'static str, String> {
    NETWORKS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let known: Vec<&str> = NETWORKS.iter().map(|(n, _)| *n).collect();
            format!(
                "`{name}` is not a built-in network (known: {})",
                known.join(", ")
            )
        })
}

/// A built-in network, parsed.
pub fn get(name: &str) -> Result<NetworkSpec, String> {
    toml::from_str(text(name)?).map_err(|e| format!("built-in network {name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::LayerSpec;

    #[test]
    fn every_builtin_network_parses_and_builds() {
        for (name, _) in NETWORKS {
            let spec = get(name).unwrap();
            let model = crate::Model::build(&spec, 0).unwrap();
            assert_eq!(model.output_shape(), &[10], "{name}");
        }
    }

    #[test]
    fn vgg16_has_thirteen_convolutions_and_three_linear_layers() {
        let spec = get("vgg16-cifar").unwrap();
        let count = |f: fn(&LayerSpec) -> bool| spec.layers.iter().filter(|l| f(&l.kind)).count();
        assert_eq!(count(|k| matches!(k, LayerSpec::Conv { .. })), 13);
        assert_eq!(count(|k| matches!(k, LayerSpec::Linear { .. })), 3);
    }

    #[test]
    fn an_unknown_network_is_an_error_naming_the_known_ones() {
        let e = get("vgg19").unwrap_err();
        assert!(e.contains("vgg19") && e.contains("vgg16-cifar"), "{e}");
    }
}
