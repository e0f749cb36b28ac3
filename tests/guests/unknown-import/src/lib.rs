//! Imports a function outside the contract (`test:evil/net.connect`), which the host must refuse.

use relish_guest::{Policy, RankError, Ranking, Request, Spec};

mod evil {
    wit_bindgen::generate!({
        inline: "
            package test:evil;
            interface net {
                connect: func(host: string) -> u32;
            }
            world evil {
                import net;
            }
        ",
        type_section_suffix: "evil",
    });
}

struct UnknownImport;

impl Policy for UnknownImport {
    const SPEC: &'static Spec = &Spec {
        name: "unknown-import",
        version: "0.1.0",
        description: "Imports test:evil/net.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let socket = evil::test::evil::net::connect("example.com");
        let scores = vec![socket as f32; request.candidates().len()];
        Ok(Ranking::from_scores(&scores, request.limit()))
    }
}

relish_guest::export_policy!(UnknownImport);
