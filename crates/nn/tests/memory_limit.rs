//! `LOWPREC_MEMORY_LIMIT_MB` and the whole network's parameter memory (found by the
//! network_spec fuzz target's budget: layers that each fit could together allocate several times
//! the budget). One test in its own binary: it sets the process environment.

use lowprec_nn::limits::{memory_budget, MEMORY_LIMIT_ENV};
use lowprec_nn::{Model, NetworkSpec};

fn spec(text: &str) -> NetworkSpec {
    toml::from_str(text).unwrap()
}

#[test]
fn budget_override_and_whole_network_parameter_check() {
    std::env::set_var(MEMORY_LIMIT_ENV, "1");
    assert_eq!(memory_budget(), 1 << 20);
    // fc1: (100 * 400 + 400) * 16 bytes = 646 KB, fc2: (400 * 100 + 100) * 16 = 642 KB: each
    // fits in 1 MiB, the two together do not
    let two = spec(
        "input = [100]\nloss = \"mse\"\n[[layer]]\ntype = \"linear\"\nname = \"fc1\"\nout = 400\n\
         bias = true\n[[layer]]\ntype = \"linear\"\nname = \"fc2\"\nout = 100\nbias = true\n",
    );
    let e = Model::build(&two, 1)
        .err()
        .expect("over the budget")
        .to_string();
    assert!(
        e.contains("the layers up to fc2") && e.contains("more than this machine's memory"),
        "{e}"
    );
    let mut one = two.clone();
    one.layers.truncate(1);
    Model::build(&one, 1).expect("one layer fits");
    std::env::set_var(MEMORY_LIMIT_ENV, "not a number");
    assert!(memory_budget() > 1 << 20, "an unreadable limit is ignored");
}
