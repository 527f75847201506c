#!/bin/sh
# Makes mysql2 and mysql3 GTID replicas of mysql1 (run once by the `replication` service).
set -eu
for replica in mysql2 mysql3; do
    mysql -h "$replica" -uroot -proot -e "
        CHANGE REPLICATION SOURCE TO SOURCE_HOST='mysql1', SOURCE_PORT=3306,
            SOURCE_USER='repl', SOURCE_PASSWORD='repl', SOURCE_AUTO_POSITION=1,
            GET_SOURCE_PUBLIC_KEY=1;
        START REPLICA;"
done
