//! The GTID set algebra agrees with MySQL 9.7's own GTID_SUBTRACT and GTID_SUBSET on
//! hundreds of generated sets, tagged GTIDs (MySQL 8.3+) included. MariaDB has no set
//! functions; its position lists are covered by the unit tests.

mod support;

use mysql_async::prelude::Queryable;
use pointsman::sandbox::Flavor;
use pointsman::topology::gtid::GtidSet;
use support::TestTopology;

/// A small deterministic generator, so a failure is reproducible from its seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

fn random_set(rng: &mut Lcg) -> String {
    const UUIDS: [&str; 3] = [
        "3e11fa47-71ca-11e1-9e33-c80aa9429562",
        "f1b33322-e6f0-11f1-ae18-02fc00000001",
        "00000000-0000-0000-0000-0000000000aa",
    ];
    const TAGS: [&str; 3] = ["", "ops", "batch_7"];
    let mut entries = Vec::new();
    for _ in 0..rng.next(4) {
        let uuid = UUIDS[rng.next(3) as usize];
        let tag = TAGS[rng.next(3) as usize];
        let mut entry = uuid.to_string();
        if !tag.is_empty() {
            entry.push(':');
            entry.push_str(tag);
        }
        for _ in 0..=rng.next(3) {
            let start = 1 + rng.next(40);
            let end = start + rng.next(6);
            entry.push_str(&format!(":{start}-{end}"));
        }
        entries.push(entry);
    }
    entries.join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gtid_algebra_matches_mysql() {
    let topology = TestTopology::start(Flavor::Mysql, 1).await;
    let mut conn = topology.sandbox.connect("node1").await.expect("connect");
    let mut rng = Lcg(20261123);
    for case in 0..300 {
        let (a_text, b_text) = (random_set(&mut rng), random_set(&mut rng));
        let a = GtidSet::parse(&a_text).expect("a parses");
        let b = GtidSet::parse(&b_text).expect("b parses");
        let (subtract, subset, union): (String, i64, String) = conn
            .exec_first(
                "SELECT GTID_SUBTRACT(?, ?), GTID_SUBSET(?, ?), GTID_SUBTRACT(CONCAT(?, ',', ?), '')",
                (&a_text, &b_text, &a_text, &b_text, &a_text, &b_text),
            )
            .await
            .expect("query")
            .expect("a row");
        let context = format!("case {case}: a = {a_text:?}, b = {b_text:?}");
        let server_subtract = GtidSet::parse(&subtract).expect("server output parses");
        assert_eq!(a.subtract(&b), server_subtract, "{context}");
        assert_eq!(
            a.subtract(&b).to_string(),
            subtract.replace(",\n", ","),
            "{context}"
        );
        assert_eq!(a.is_subset_of(&b), subset == 1, "{context}");
        assert_eq!(
            a.union(&b),
            GtidSet::parse(&union).expect("parses"),
            "{context}"
        );
    }
    let _ = conn.disconnect().await;
}
