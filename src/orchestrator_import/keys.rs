//! orchestrator's configuration keys (go/config/config.go at openark/orchestrator
//! 730db91f): each key's Go type, default, and how the import deals with it — translated
//! by a method of `Import`, or left out for a stated reason.

use super::*;

/// The Go type of an orchestrator key, as its JSON decoder enforces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GoKind {
    /// `string`
    Text,
    /// `bool`
    Flag,
    /// `int`, `int64`
    Whole,
    /// `uint`
    Count,
    /// `[]string`
    TextList,
    /// `map[string]string`
    TextMap,
}

impl GoKind {
    pub(super) fn expected(self) -> &'static str {
        match self {
            GoKind::Text => "text in quotes, like \"value\"",
            GoKind::Flag => "true or false, without quotes",
            GoKind::Whole => "a whole number without quotes, like 10",
            GoKind::Count => "a whole number of 0 or more without quotes, like 5",
            GoKind::TextList => "a list of texts, like [\"a\", \"b\"]",
            GoKind::TextMap => "an object of texts, like {\"pattern\": \"alias\"}",
        }
    }

    pub(super) fn accepts(self, value: &Value) -> bool {
        match self {
            GoKind::Text => value.is_string(),
            GoKind::Flag => value.is_boolean(),
            GoKind::Whole => value.is_i64(),
            GoKind::Count => value.is_u64(),
            GoKind::TextList | GoKind::TextMap => false,
        }
    }
}

/// What a JSON value is, for an error; never the value itself (it may be a secret).
pub(super) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "true or false",
        Value::Number(number) if number.is_u64() || number.is_i64() => {
            if number.as_i64().is_some_and(|n| n < 0) {
                "a negative number"
            } else if number.is_u64() && number.as_i64().is_none() {
                "a number too large for it"
            } else {
                "a whole number"
            }
        }
        Value::Number(_) => "a number with a fraction or an exponent",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// How the import deals with a key nothing special handles.
#[derive(Clone, Copy, Debug)]
pub(super) enum Handling {
    /// A method of `Import` notes it.
    Translate,
    /// Left out for this reason (unless it holds orchestrator's default).
    Skip(&'static str),
}

/// One key of orchestrator's `Configuration` (go/config/config.go).
#[derive(Clone, Copy, Debug)]
pub(super) struct KnownKey {
    pub(super) name: &'static str,
    pub(super) kind: GoKind,
    /// orchestrator's default, as JSON text (`newConfiguration`, or Go's zero value).
    pub(super) default: &'static str,
    pub(super) handling: Handling,
}

pub(super) const fn known(
    name: &'static str,
    kind: GoKind,
    default: &'static str,
    handling: Handling,
) -> KnownKey {
    KnownKey {
        name,
        kind,
        default,
        handling,
    }
}

pub(super) const BACKEND: &str = "orchestrator's own backend database: pointsman keeps its state in its embedded store (store.path), nothing to connect to";
pub(super) const RAFT: &str = "orchestrator raft: pointsman's HA is [ha], a leader lease in Consul (routing.consul.address); there are no peers to list";
pub(super) const AGENTS: &str = "orchestrator-agent (seeding, snapshots): pointsman has no agents";
pub(super) const PSEUDO_GTID: &str = "Pseudo-GTID and binlog scanning: pointsman recovers by GTID only and refuses file/position topologies";
pub(super) const BINLOG_SERVERS: &str =
    "binlog servers (MaxScale): pointsman does not support them";
pub(super) const WEB_AUTH: &str = "pointsman's API has one bearer token for changes (api.token, token_env or token_file; api.token_for_reads for reads): no users, groups, OAuth or read-only mode";
pub(super) const WEB_TLS: &str = "pointsman's API speaks plain HTTP: put a TLS proxy in front of it (and name the proxy in api.allowed_hosts)";
pub(super) const WEB_UI: &str =
    "a detail of orchestrator's web interface with no pointsman setting";
pub(super) const TOPOLOGY_TLS: &str =
    "pointsman connects to the database servers without TLS and has no setting for it";
pub(super) const LOGGING: &str = "pointsman logs to stderr (journald under systemd; log.format = \"json\" for structured lines) and keeps its audit in its store (`pointsman audit`)";
pub(super) const METRICS: &str =
    "pointsman serves Prometheus metrics at /metrics; it does not push to Graphite";
pub(super) const DISCOVERY_INTERNALS: &str =
    "an internal of orchestrator's discovery with no pointsman setting";
pub(super) const DISCOVERY_FILTERS: &str = "pointsman discovers every instance it reaches from the seeds; it has no filter to leave hosts out";
pub(super) const HOSTNAMES: &str = "pointsman names an instance by the host:port it reaches it at, and has no hostname-resolution setting";
pub(super) const ATTRIBUTES: &str = "pointsman keeps no datacenter, region, environment or instance-alias attributes (promotion.prefer, prefer_not and must_not are regexes on host:port)";
pub(super) const CLUSTER_ALIASES: &str = "pointsman names a cluster by a [[cluster]] table (alias and instances), not by a regex or a query: add one [[cluster]] per aliased cluster, with the alias orchestrator showed, so routes and Consul keys keep their names";
pub(super) const PROMOTION_RULES: &str = "pointsman's promotion rules are promotion.prefer, prefer_not and must_not (regexes on host:port), not rules registered per instance at run time";
pub(super) const GEOGRAPHY: &str = "pointsman knows no datacenters or regions: promotion.must_not (regexes on host:port) keeps a failover within one place";
pub(super) const SEMI_SYNC: &str = "pointsman carries a primary's semi-sync over to the replica it promotes and reports a locked or fallen-back semi-sync primary, but does not count or enforce semi-sync replicas; recovery.require_semi_sync_ack promotes only from an in-sync primary to an acknowledging replica";
pub(super) const REPLICATION_CREDENTIALS: &str = "pointsman takes the replication account from recovery.replication_user and replication_password (or _env, _file), not from a query";
pub(super) const LAG_QUERY: &str =
    "pointsman has no custom lag query: it takes lag from the replicas' replication status";
pub(super) const READ_TIMEOUTS: &str = "pointsman bounds every statement, probe or recovery step, by one mysql.query_timeout (1s by default); orchestrator's separate read timeouts do not carry over";
pub(super) const FENCING: &str = "pointsman keeps the old primary fenced (read_only until `pointsman reattach`) instead of detaching or downtiming lost instances; there is no setting";
pub(super) const RELAY_LOG: &str = "pointsman always waits for the promoted replica to apply its relay log, up to recovery.apply_timeout, and fails the recovery after that; there is no setting";
pub(super) const PROMOTION_ALWAYS: &str = "pointsman always does this on promotion (RESET REPLICA ALL, read_only and super_read_only OFF); there is no setting";
pub(super) const SUPER_READ_ONLY: &str =
    "pointsman always sets super_read_only with read_only on MySQL (MariaDB has none); there is no setting";
pub(super) const SHOW_REPLICAS: &str = "pointsman always asks SHOW REPLICAS / SHOW SLAVE HOSTS first, then the processlist; there is no setting";
pub(super) const NO_SETTING: &str = "no pointsman setting does this";
pub(super) const DETECTION_BLOCK: &str =
    "no pointsman setting: a failure is audited once, and a refused recovery once per reason";
pub(super) const RECOVERY_IGNORE: &str = "pointsman has no host filter for recovery: downtime an instance (`pointsman downtime host:port --for 1h --reason ...`) to keep recovery away from it";
pub(super) const INTERMEDIATE_FILTERS: &str = "pointsman has one list for every automatic recovery, dead intermediate primaries included: recovery.auto_clusters (from RecoverMasterClusterFilters)";
pub(super) const CO_MASTERS: &str = "pointsman has no co-master recovery and no setting for it";
pub(super) const NON_WRITEABLE: &str = "no pointsman setting: pointsman reports PrimaryReadOnly and makes a primary writable again by itself only when it restarted read-only while its replicas still follow it";
pub(super) const POSTPONE: &str = "no pointsman setting: every other replica is re-pointed after the promotion, each checked for up to recovery.verify_timeout";
pub(super) const TAKE_MASTER: &str = "pointsman has no take-master command, so nothing runs these";
pub(super) const STATUS_ENDPOINT: &str =
    "pointsman's health check is GET /api/v1/health, open without a token; it cannot be moved";
pub(super) const INSTANCE_PORT: &str = "pointsman wants every address's port spelled out; the import used it only to complete DiscoverySeeds entries written without a port";

pub(super) use GoKind::{Count, Flag, Text, TextList, TextMap, Whole};
pub(super) use Handling::{Skip, Translate};

/// Every field of orchestrator's `Configuration` struct, its Go type and its default.
pub(super) const KNOWN_KEYS: &[KnownKey] = &[
    known("Debug", Flag, "false", Translate),
    known("EnableSyslog", Flag, "false", Skip(LOGGING)),
    known("ListenAddress", Text, "\":3000\"", Translate),
    known("ListenSocket", Text, "\"\"", Translate),
    known("HTTPAdvertise", Text, "\"\"", Skip(RAFT)),
    known("AgentsServerPort", Text, "\":3001\"", Skip(AGENTS)),
    known("MySQLTopologyUser", Text, "\"\"", Translate),
    known("MySQLTopologyPassword", Text, "\"\"", Translate),
    known(
        "MySQLTopologyCredentialsConfigFile",
        Text,
        "\"\"",
        Translate,
    ),
    known(
        "MySQLTopologySSLPrivateKeyFile",
        Text,
        "\"\"",
        Skip(TOPOLOGY_TLS),
    ),
    known("MySQLTopologySSLCertFile", Text, "\"\"", Skip(TOPOLOGY_TLS)),
    known("MySQLTopologySSLCAFile", Text, "\"\"", Skip(TOPOLOGY_TLS)),
    known(
        "MySQLTopologySSLSkipVerify",
        Flag,
        "false",
        Skip(TOPOLOGY_TLS),
    ),
    known(
        "MySQLTopologyUseMutualTLS",
        Flag,
        "false",
        Skip(TOPOLOGY_TLS),
    ),
    known("MySQLTopologyUseMixedTLS", Flag, "true", Skip(TOPOLOGY_TLS)),
    known("TLSCacheTTLFactor", Count, "100", Skip(TOPOLOGY_TLS)),
    known("BackendDB", Text, "\"mysql\"", Skip(BACKEND)),
    known("SQLite3DataFile", Text, "\"\"", Translate),
    known(
        "SkipOrchestratorDatabaseUpdate",
        Flag,
        "false",
        Skip(BACKEND),
    ),
    known(
        "PanicIfDifferentDatabaseDeploy",
        Flag,
        "false",
        Skip(BACKEND),
    ),
    known("RaftEnabled", Flag, "false", Translate),
    known("RaftBind", Text, "\"127.0.0.1:10008\"", Skip(RAFT)),
    known("RaftAdvertise", Text, "\"\"", Skip(RAFT)),
    known("RaftDataDir", Text, "\"\"", Skip(RAFT)),
    known("DefaultRaftPort", Whole, "10008", Skip(RAFT)),
    known("RaftNodes", TextList, "[]", Skip(RAFT)),
    known("ExpectFailureAnalysisConcensus", Flag, "true", Skip(RAFT)),
    known("MySQLOrchestratorHost", Text, "\"\"", Translate),
    known(
        "MySQLOrchestratorMaxPoolConnections",
        Whole,
        "128",
        Skip(BACKEND),
    ),
    known("MySQLOrchestratorPort", Count, "3306", Skip(BACKEND)),
    known("MySQLOrchestratorDatabase", Text, "\"\"", Skip(BACKEND)),
    known("MySQLOrchestratorUser", Text, "\"\"", Skip(BACKEND)),
    known("MySQLOrchestratorPassword", Text, "\"\"", Skip(BACKEND)),
    known(
        "MySQLOrchestratorCredentialsConfigFile",
        Text,
        "\"\"",
        Skip(BACKEND),
    ),
    known(
        "MySQLOrchestratorSSLPrivateKeyFile",
        Text,
        "\"\"",
        Skip(BACKEND),
    ),
    known("MySQLOrchestratorSSLCertFile", Text, "\"\"", Skip(BACKEND)),
    known("MySQLOrchestratorSSLCAFile", Text, "\"\"", Skip(BACKEND)),
    known(
        "MySQLOrchestratorSSLSkipVerify",
        Flag,
        "false",
        Skip(BACKEND),
    ),
    known(
        "MySQLOrchestratorUseMutualTLS",
        Flag,
        "false",
        Skip(BACKEND),
    ),
    known(
        "MySQLOrchestratorReadTimeoutSeconds",
        Whole,
        "30",
        Skip(BACKEND),
    ),
    known(
        "MySQLOrchestratorRejectReadOnly",
        Flag,
        "false",
        Skip(BACKEND),
    ),
    known("MySQLConnectTimeoutSeconds", Whole, "2", Translate),
    known(
        "MySQLDiscoveryReadTimeoutSeconds",
        Whole,
        "10",
        Skip(READ_TIMEOUTS),
    ),
    known(
        "MySQLTopologyReadTimeoutSeconds",
        Whole,
        "600",
        Skip(READ_TIMEOUTS),
    ),
    known(
        "MySQLConnectionLifetimeSeconds",
        Whole,
        "0",
        Skip(DISCOVERY_INTERNALS),
    ),
    known("DefaultInstancePort", Whole, "3306", Skip(INSTANCE_PORT)),
    known("SlaveLagQuery", Text, "\"\"", Skip(LAG_QUERY)),
    known("ReplicationLagQuery", Text, "\"\"", Skip(LAG_QUERY)),
    known(
        "ReplicationCredentialsQuery",
        Text,
        "\"\"",
        Skip(REPLICATION_CREDENTIALS),
    ),
    known(
        "DiscoverByShowSlaveHosts",
        Flag,
        "false",
        Skip(SHOW_REPLICAS),
    ),
    known("UseSuperReadOnly", Flag, "false", Skip(SUPER_READ_ONLY)),
    known("InstancePollSeconds", Count, "5", Translate),
    known(
        "ReasonableInstanceCheckSeconds",
        Count,
        "1",
        Skip(DISCOVERY_INTERNALS),
    ),
    known("InstanceWriteBufferSize", Whole, "100", Skip(BACKEND)),
    known("BufferInstanceWrites", Flag, "false", Skip(BACKEND)),
    known(
        "InstanceFlushIntervalMilliseconds",
        Whole,
        "100",
        Skip(BACKEND),
    ),
    known("SkipMaxScaleCheck", Flag, "true", Skip(BINLOG_SERVERS)),
    known(
        "UnseenInstanceForgetHours",
        Count,
        "240",
        Skip(DISCOVERY_INTERNALS),
    ),
    known(
        "SnapshotTopologiesIntervalHours",
        Count,
        "0",
        Skip(DISCOVERY_INTERNALS),
    ),
    known("DiscoveryMaxConcurrency", Count, "300", Translate),
    known(
        "DiscoveryQueueCapacity",
        Count,
        "100000",
        Skip(DISCOVERY_INTERNALS),
    ),
    known(
        "DiscoveryQueueMaxStatisticsSize",
        Whole,
        "120",
        Skip(DISCOVERY_INTERNALS),
    ),
    known(
        "DiscoveryCollectionRetentionSeconds",
        Count,
        "120",
        Skip(DISCOVERY_INTERNALS),
    ),
    known("DiscoverySeeds", TextList, "[]", Translate),
    known(
        "InstanceBulkOperationsWaitTimeoutSeconds",
        Count,
        "10",
        Skip(DISCOVERY_INTERNALS),
    ),
    known(
        "HostnameResolveMethod",
        Text,
        "\"default\"",
        Skip(HOSTNAMES),
    ),
    known(
        "MySQLHostnameResolveMethod",
        Text,
        "\"@@hostname\"",
        Skip(HOSTNAMES),
    ),
    known(
        "SkipBinlogServerUnresolveCheck",
        Flag,
        "true",
        Skip(BINLOG_SERVERS),
    ),
    known(
        "ExpiryHostnameResolvesMinutes",
        Whole,
        "60",
        Skip(HOSTNAMES),
    ),
    known(
        "RejectHostnameResolvePattern",
        Text,
        "\"\"",
        Skip(HOSTNAMES),
    ),
    known("ReasonableReplicationLagSeconds", Whole, "10", Translate),
    known(
        "ProblemIgnoreHostnameFilters",
        TextList,
        "[]",
        Skip(NO_SETTING),
    ),
    known("VerifyReplicationFilters", Flag, "false", Skip(NO_SETTING)),
    known(
        "ReasonableMaintenanceReplicationLagSeconds",
        Whole,
        "20",
        Skip(NO_SETTING),
    ),
    known(
        "CandidateInstanceExpireMinutes",
        Count,
        "60",
        Skip(PROMOTION_RULES),
    ),
    known("AuditLogFile", Text, "\"\"", Skip(LOGGING)),
    known("AuditToSyslog", Flag, "false", Skip(LOGGING)),
    known("AuditToBackendDB", Flag, "false", Skip(LOGGING)),
    known("AuditPurgeDays", Count, "7", Translate),
    known("RemoveTextFromHostnameDisplay", Text, "\"\"", Skip(WEB_UI)),
    known("ReadOnly", Flag, "false", Skip(WEB_AUTH)),
    known("AuthenticationMethod", Text, "\"\"", Skip(WEB_AUTH)),
    known("OAuthClientId", Text, "\"\"", Skip(WEB_AUTH)),
    known("OAuthClientSecret", Text, "\"\"", Skip(WEB_AUTH)),
    known("OAuthScopes", TextList, "[]", Skip(WEB_AUTH)),
    known("HTTPAuthUser", Text, "\"\"", Skip(WEB_AUTH)),
    known("HTTPAuthPassword", Text, "\"\"", Skip(WEB_AUTH)),
    known(
        "AuthUserHeader",
        Text,
        "\"X-Forwarded-User\"",
        Skip(WEB_AUTH),
    ),
    known("PowerAuthUsers", TextList, "[\"*\"]", Skip(WEB_AUTH)),
    known("PowerAuthGroups", TextList, "[]", Skip(WEB_AUTH)),
    known("AccessTokenUseExpirySeconds", Count, "60", Skip(WEB_AUTH)),
    known("AccessTokenExpiryMinutes", Count, "1440", Skip(WEB_AUTH)),
    known("ClusterNameToAlias", TextMap, "{}", Skip(CLUSTER_ALIASES)),
    known(
        "DetectClusterAliasQuery",
        Text,
        "\"\"",
        Skip(CLUSTER_ALIASES),
    ),
    known("DetectClusterDomainQuery", Text, "\"\"", Skip(ATTRIBUTES)),
    known("DetectInstanceAliasQuery", Text, "\"\"", Skip(ATTRIBUTES)),
    known(
        "DetectPromotionRuleQuery",
        Text,
        "\"\"",
        Skip(PROMOTION_RULES),
    ),
    known("DataCenterPattern", Text, "\"\"", Skip(ATTRIBUTES)),
    known("RegionPattern", Text, "\"\"", Skip(ATTRIBUTES)),
    known("PhysicalEnvironmentPattern", Text, "\"\"", Skip(ATTRIBUTES)),
    known("DetectDataCenterQuery", Text, "\"\"", Skip(ATTRIBUTES)),
    known("DetectRegionQuery", Text, "\"\"", Skip(ATTRIBUTES)),
    known(
        "DetectPhysicalEnvironmentQuery",
        Text,
        "\"\"",
        Skip(ATTRIBUTES),
    ),
    known("DetectSemiSyncEnforcedQuery", Text, "\"\"", Skip(SEMI_SYNC)),
    known(
        "SupportFuzzyPoolHostnames",
        Flag,
        "true",
        Skip(DISCOVERY_INTERNALS),
    ),
    known(
        "InstancePoolExpiryMinutes",
        Count,
        "60",
        Skip(DISCOVERY_INTERNALS),
    ),
    known("PromotionIgnoreHostnameFilters", TextList, "[]", Translate),
    known("ServeAgentsHttp", Flag, "false", Skip(AGENTS)),
    known("AgentsUseSSL", Flag, "false", Skip(AGENTS)),
    known("AgentsUseMutualTLS", Flag, "false", Skip(AGENTS)),
    known("AgentSSLSkipVerify", Flag, "false", Skip(AGENTS)),
    known("AgentSSLPrivateKeyFile", Text, "\"\"", Skip(AGENTS)),
    known("AgentSSLCertFile", Text, "\"\"", Skip(AGENTS)),
    known("AgentSSLCAFile", Text, "\"\"", Skip(AGENTS)),
    known("AgentSSLValidOUs", TextList, "[]", Skip(AGENTS)),
    known("UseSSL", Flag, "false", Skip(WEB_TLS)),
    known("UseMutualTLS", Flag, "false", Skip(WEB_TLS)),
    known("SSLSkipVerify", Flag, "false", Skip(WEB_TLS)),
    known("SSLPrivateKeyFile", Text, "\"\"", Skip(WEB_TLS)),
    known("SSLCertFile", Text, "\"\"", Skip(WEB_TLS)),
    known("SSLCAFile", Text, "\"\"", Skip(WEB_TLS)),
    known("SSLValidOUs", TextList, "[]", Skip(WEB_TLS)),
    known(
        "StatusEndpoint",
        Text,
        "\"/api/status\"",
        Skip(STATUS_ENDPOINT),
    ),
    known("StatusOUVerify", Flag, "false", Skip(WEB_TLS)),
    known("AgentPollMinutes", Count, "60", Skip(AGENTS)),
    known("UnseenAgentForgetHours", Count, "6", Skip(AGENTS)),
    known("StaleSeedFailMinutes", Count, "60", Skip(AGENTS)),
    known("SeedAcceptableBytesDiff", Whole, "8192", Skip(AGENTS)),
    known("SeedWaitSecondsBeforeSend", Whole, "2", Skip(AGENTS)),
    known("AutoPseudoGTID", Flag, "false", Skip(PSEUDO_GTID)),
    known("PseudoGTIDPattern", Text, "\"\"", Skip(PSEUDO_GTID)),
    known(
        "PseudoGTIDPatternIsFixedSubstring",
        Flag,
        "false",
        Skip(PSEUDO_GTID),
    ),
    known("PseudoGTIDMonotonicHint", Text, "\"\"", Skip(PSEUDO_GTID)),
    known("DetectPseudoGTIDQuery", Text, "\"\"", Skip(PSEUDO_GTID)),
    known("BinlogEventsChunkSize", Whole, "10000", Skip(PSEUDO_GTID)),
    known(
        "SkipBinlogEventsContaining",
        TextList,
        "[]",
        Skip(PSEUDO_GTID),
    ),
    known(
        "ReduceReplicationAnalysisCount",
        Flag,
        "true",
        Skip(NO_SETTING),
    ),
    known(
        "FailureDetectionPeriodBlockMinutes",
        Whole,
        "60",
        Skip(DETECTION_BLOCK),
    ),
    known("RecoveryPeriodBlockMinutes", Whole, "60", Translate),
    known("RecoveryPeriodBlockSeconds", Whole, "3600", Translate),
    known(
        "RecoveryIgnoreHostnameFilters",
        TextList,
        "[]",
        Skip(RECOVERY_IGNORE),
    ),
    known("RecoverMasterClusterFilters", TextList, "[]", Translate),
    known(
        "RecoverIntermediateMasterClusterFilters",
        TextList,
        "[]",
        Skip(INTERMEDIATE_FILTERS),
    ),
    known("ProcessesShellCommand", Text, "\"bash\"", Translate),
    known("OnFailureDetectionProcesses", TextList, "[]", Translate),
    known("PreGracefulTakeoverProcesses", TextList, "[]", Translate),
    known("PreFailoverProcesses", TextList, "[]", Translate),
    known("PostFailoverProcesses", TextList, "[]", Translate),
    known(
        "PostUnsuccessfulFailoverProcesses",
        TextList,
        "[]",
        Translate,
    ),
    known("PostMasterFailoverProcesses", TextList, "[]", Translate),
    known(
        "PostIntermediateMasterFailoverProcesses",
        TextList,
        "[]",
        Translate,
    ),
    known("PostGracefulTakeoverProcesses", TextList, "[]", Translate),
    known("PostTakeMasterProcesses", TextList, "[]", Skip(TAKE_MASTER)),
    known(
        "RecoverNonWriteableMaster",
        Flag,
        "false",
        Skip(NON_WRITEABLE),
    ),
    known(
        "CoMasterRecoveryMustPromoteOtherCoMaster",
        Flag,
        "true",
        Skip(CO_MASTERS),
    ),
    known(
        "DetachLostSlavesAfterMasterFailover",
        Flag,
        "true",
        Skip(FENCING),
    ),
    known(
        "DetachLostReplicasAfterMasterFailover",
        Flag,
        "false",
        Skip(FENCING),
    ),
    known(
        "ApplyMySQLPromotionAfterMasterFailover",
        Flag,
        "true",
        Skip(PROMOTION_ALWAYS),
    ),
    known(
        "PreventCrossDataCenterMasterFailover",
        Flag,
        "false",
        Skip(GEOGRAPHY),
    ),
    known(
        "PreventCrossRegionMasterFailover",
        Flag,
        "false",
        Skip(GEOGRAPHY),
    ),
    known(
        "MasterFailoverLostInstancesDowntimeMinutes",
        Count,
        "0",
        Skip(FENCING),
    ),
    known(
        "MasterFailoverDetachSlaveMasterHost",
        Flag,
        "false",
        Skip(FENCING),
    ),
    known(
        "MasterFailoverDetachReplicaMasterHost",
        Flag,
        "false",
        Skip(FENCING),
    ),
    known("FailMasterPromotionOnLagMinutes", Count, "0", Translate),
    known(
        "FailMasterPromotionIfSQLThreadNotUpToDate",
        Flag,
        "false",
        Skip(RELAY_LOG),
    ),
    known(
        "DelayMasterPromotionIfSQLThreadNotUpToDate",
        Flag,
        "false",
        Skip(RELAY_LOG),
    ),
    known(
        "PostponeSlaveRecoveryOnLagMinutes",
        Count,
        "0",
        Skip(POSTPONE),
    ),
    known(
        "PostponeReplicaRecoveryOnLagMinutes",
        Count,
        "0",
        Skip(POSTPONE),
    ),
    known("OSCIgnoreHostnameFilters", TextList, "[]", Skip(NO_SETTING)),
    known("GraphiteAddr", Text, "\"\"", Skip(METRICS)),
    known("GraphitePath", Text, "\"\"", Skip(METRICS)),
    known(
        "GraphiteConvertHostnameDotsToUnderscores",
        Flag,
        "true",
        Skip(METRICS),
    ),
    known("GraphitePollSeconds", Whole, "60", Skip(METRICS)),
    known("URLPrefix", Text, "\"\"", Skip(WEB_UI)),
    known(
        "DiscoveryIgnoreReplicaHostnameFilters",
        TextList,
        "[]",
        Skip(DISCOVERY_FILTERS),
    ),
    known(
        "DiscoveryIgnoreMasterHostnameFilters",
        TextList,
        "[]",
        Skip(DISCOVERY_FILTERS),
    ),
    known(
        "DiscoveryIgnoreHostnameFilters",
        TextList,
        "[]",
        Skip(DISCOVERY_FILTERS),
    ),
    known("ConsulAddress", Text, "\"\"", Translate),
    known("ConsulScheme", Text, "\"http\"", Translate),
    known("ConsulAclToken", Text, "\"\"", Translate),
    known(
        "ConsulCrossDataCenterDistribution",
        Flag,
        "false",
        Translate,
    ),
    known("ConsulKVStoreProvider", Text, "\"consul\"", Translate),
    known("ConsulMaxKVsPerTransaction", Whole, "5", Translate),
    known("ZkAddress", Text, "\"\"", Translate),
    known("KVClusterMasterPrefix", Text, "\"mysql/master\"", Translate),
    known("WebMessage", Text, "\"\"", Skip(WEB_UI)),
    known(
        "MaxConcurrentReplicaOperations",
        Whole,
        "5",
        Skip(DISCOVERY_INTERNALS),
    ),
    known(
        "EnforceExactSemiSyncReplicas",
        Flag,
        "false",
        Skip(SEMI_SYNC),
    ),
    known(
        "RecoverLockedSemiSyncMaster",
        Flag,
        "false",
        Skip(SEMI_SYNC),
    ),
    known(
        "ReasonableLockedSemiSyncMasterSeconds",
        Count,
        "0",
        Skip(SEMI_SYNC),
    ),
];

/// Names orchestrator lists as deprecated: no longer fields, so it ignores them.
pub(super) const DEPRECATED_KEYS: &[&str] = &[
    "DatabaselessMode__experimental",
    "BufferBinlogEvents",
    "BinlogFileHistoryDays",
    "MaintenanceOwner",
    "ReadLongRunningQueries",
    "DiscoveryPollSeconds",
    "ActiveNodeExpireSeconds",
    "AuditPageSize",
    "SlaveStartPostWaitMilliseconds",
    "MySQLTopologyMaxPoolConnections",
    "MaintenancePurgeDays",
    "MaintenanceExpireMinutes",
    "HttpTimeoutSeconds",
    "AgentAutoDiscover",
    "PseudoGTIDCoordinatesHistoryHeuristicMinutes",
    "PseudoGTIDPreferIndependentMultiMatch",
    "MaxOutdatedKeysToShow",
];

/// Go's decoder matches a JSON key to a field exactly, or else regardless of case.
pub(super) fn known_key(written: &str) -> Option<&'static KnownKey> {
    KNOWN_KEYS
        .iter()
        .find(|key| key.name == written)
        .or_else(|| {
            KNOWN_KEYS
                .iter()
                .find(|key| key.name.eq_ignore_ascii_case(written))
        })
}
