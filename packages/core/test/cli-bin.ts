/**
 * The test job's operator CLI as a real program (Cli.main), for the bin smoke test. Configured by
 * CW_STORE (store schema) and CW_APP (app schema).
 */
import * as Cli from "../src/Cli.js"
import { makeCli } from "./cliFixtures.js"

Cli.main(makeCli(process.env["CW_STORE"]!, process.env["CW_APP"]!, []) satisfies Cli.Cli)
