<#
.SYNOPSIS
    Registers a Windows scheduled task that runs Send-SynkroExport.ps1 (daily, or every N
    minutes).

.DESCRIPTION
    Creates (or with -Force replaces) a task in Task Scheduler whose action is

        powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass
            -File Send-SynkroExport.ps1 -Path <ExportPath> -Destination <Destination> ...

    The task runs whether or not a user is logged on. The account it runs as needs read access to
    the export folder and write access to the inbox share. The SYSTEM account reaches shares as
    the computer account (DOMAIN\COMPUTER$): grant that account write access on the share, or
    run the task as a service account with -Credential.

    Needs an elevated (Run as administrator) PowerShell on Windows.

    Exit codes: 0 registered; 1 failed (the message says why); 2 a task of that name exists and
    -Force was not given.

.PARAMETER TaskName
    Name of the task in Task Scheduler. Default: "Synkro export to <last folder of Destination>".

.PARAMETER TaskPath
    Task Scheduler folder for the task (default "\Synkro\").

.PARAMETER ExportPath
    Passed to Send-SynkroExport.ps1 -Path: the export file(s), wildcards allowed.

.PARAMETER Destination
    Passed to Send-SynkroExport.ps1 -Destination: the integration's inbox folder or share.

.PARAMETER At
    Time of day of the (first) run, e.g. "02:30" (default 02:00).

.PARAMETER IntervalMinutes
    Repeat every this many minutes from -At (0, the default, runs once a day at -At).

.PARAMETER Credential
    Account to run as (a service account with access to the share). Default: SYSTEM.

.PARAMETER ScriptPath
    Path of Send-SynkroExport.ps1 (default: beside this script).

.PARAMETER PowerShellExe
    The PowerShell to run: "powershell.exe" (Windows PowerShell 5.1, the default) or the full
    path of pwsh.exe (PowerShell 7).

.PARAMETER SendArguments
    More arguments for Send-SynkroExport.ps1, e.g. "-AppendTimestamp -ArchivePath D:\Sent".

.PARAMETER Force
    Replace an existing task of the same name.

.EXAMPLE
    .\Register-SynkroExportTask.ps1 -ExportPath "C:\Exports\sales_*.csv" `
        -Destination "\\synkro\inbox\acme-1c" -At 01:30

.EXAMPLE
    .\Register-SynkroExportTask.ps1 -ExportPath "C:\Exports\*.csv" -Destination "\\synkro\inbox\acme-1c" `
        -IntervalMinutes 15 -Credential (Get-Credential CORP\svc-synkro) -Force
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [string] $TaskName = "",

    [string] $TaskPath = "\Synkro\",

    [Parameter(Mandatory = $true)]
    [string] $ExportPath,

    [Parameter(Mandatory = $true)]
    [string] $Destination,

    [string] $At = "02:00",

    [ValidateRange(0, 1440)]
    [int] $IntervalMinutes = 0,

    [System.Management.Automation.PSCredential] $Credential = $null,

    [string] $ScriptPath = "",

    [string] $PowerShellExe = "powershell.exe",

    [string] $SendArguments = "",

    [switch] $Force
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

try {
    if (-not $ScriptPath) {
        $ScriptPath = Join-Path $PSScriptRoot 'Send-SynkroExport.ps1'
    }
    if (-not (Test-Path -LiteralPath $ScriptPath)) {
        throw "Send-SynkroExport.ps1 not found at $ScriptPath (use -ScriptPath)"
    }
    $ScriptPath = (Resolve-Path -LiteralPath $ScriptPath).Path
    if (-not $TaskName) {
        $TaskName = 'Synkro export to {0}' -f (Split-Path -Leaf $Destination.TrimEnd('\', '/'))
    }
    $start = [DateTime]::ParseExact($At, 'HH:mm', [Globalization.CultureInfo]::InvariantCulture)

    $existing = Get-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -ErrorAction SilentlyContinue
    if ($existing -and -not $Force) {
        Write-Error "a task '$TaskPath$TaskName' already exists; use -Force to replace it" -ErrorAction Continue
        exit 2
    }

    $arguments = '-NoProfile -NonInteractive -ExecutionPolicy Bypass -File "{0}" -Path "{1}" -Destination "{2}"' -f `
        $ScriptPath, $ExportPath, $Destination
    if ($SendArguments) {
        $arguments = "$arguments $SendArguments"
    }
    $action = New-ScheduledTaskAction -Execute $PowerShellExe -Argument $arguments `
        -WorkingDirectory (Split-Path -Parent $ScriptPath)

    if ($IntervalMinutes -gt 0) {
        $trigger = New-ScheduledTaskTrigger -Once -At $start `
            -RepetitionInterval (New-TimeSpan -Minutes $IntervalMinutes) `
            -RepetitionDuration (New-TimeSpan -Days 3650)
    }
    else {
        $trigger = New-ScheduledTaskTrigger -Daily -At $start
    }
    # IgnoreNew: a slow upload is never overlapped by the next run of the same task.
    $settings = New-ScheduledTaskSettingsSet -StartWhenAvailable -MultipleInstances IgnoreNew `
        -ExecutionTimeLimit (New-TimeSpan -Hours 4) -RestartCount 3 `
        -RestartInterval (New-TimeSpan -Minutes 5)

    $description = "Sends $ExportPath to the Synkro inbox $Destination (Send-SynkroExport.ps1)."
    if ($PSCmdlet.ShouldProcess("$TaskPath$TaskName", 'Register scheduled task')) {
        if ($existing) {
            Unregister-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -Confirm:$false
        }
        if ($Credential) {
            $password = $Credential.GetNetworkCredential().Password
            Register-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -Action $action `
                -Trigger $trigger -Settings $settings -Description $description `
                -User $Credential.UserName -Password $password -RunLevel Limited | Out-Null
        }
        else {
            $principal = New-ScheduledTaskPrincipal -UserId 'SYSTEM' -LogonType ServiceAccount `
                -RunLevel Highest
            Register-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -Action $action `
                -Trigger $trigger -Settings $settings -Description $description `
                -Principal $principal | Out-Null
        }
        Write-Host "registered '$TaskPath$TaskName': $PowerShellExe $arguments"
    }
    exit 0
}
catch {
    Write-Error "could not register the task: $($_.Exception.Message)" -ErrorAction Continue
    exit 1
}
