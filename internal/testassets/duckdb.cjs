// Runs SQL statements with DuckDB (the @duckdb/node-api package that
// scripts/test-assets.sh fetches), so the test tables are written by a real
// third-party Parquet writer. Usage: node duckdb.cjs MODULE_DIR SQL...
const path = require("path");
const { DuckDBInstance } = require(path.join(process.argv[2], "@duckdb/node-api"));
(async () => {
  const db = await DuckDBInstance.create(":memory:");
  const con = await db.connect();
  await con.run("SET threads = 1"); // keep the row order of the input
  for (const sql of process.argv.slice(3)) {
    await con.run(sql);
  }
})().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
