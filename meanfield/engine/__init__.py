"""Running a scenario: the run contract and a class per kind (``runs``), the plan and the driver
(``simulation``), memory estimates (``memory``), thread control (``threads``) and progress
(``progress``). Writes files through ``storage`` only."""
